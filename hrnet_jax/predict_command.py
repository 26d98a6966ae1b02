r"""``hrnet-jax predict`` (and ``launch/demo.py``): poses of photos, folders, videos, cameras.

hrnet-jax predict --model=hrnet_w32_coco_256x192 --input=photo.jpg --output=drawn.jpg
hrnet-jax predict --model=NAME --input=video.mp4 --output=drawn.mp4 [--smooth]
hrnet-jax predict --model=NAME --input=0 --output=camera.mp4 --max_frames=300
hrnet-jax predict --workdir=RUN --input=FOLDER --output=FOLDER [--boxes=DETECTIONS.json]
hrnet-jax predict --model=URL|FOLDER|FILE.pth --config=configs/....py --input=... --output=...

--model takes a zoo model (``python -m hrnet_jax.zoo`` lists them: downloaded, verified and
converted on first use, then read from the cache with no network) with its recipe and test
settings, or weights of any other source with the --config of their model; --workdir a
training run. --input is an image, a folder of images, a video file, a camera index (0) or a
stream URL (rtsp://..., http://...); frames are read and written on threads beside the
network. Ctrl-C (or --max_frames) ends a camera or stream cleanly.

A top-down model finds people in the boxes of --detector: OpenCV's HOG people detector (the
default: no download, upright people only), an ONNX YOLOX/RTMDet detector (a .onnx file or a
name of ``hrnet_jax.onnx_detectors``, onnxruntime required) or none (each image whole is one
box); or of --boxes, a COCO detection results file whose image_id is matched to the number in
an image's file name (000000000139.jpg -> 139), else its 0-based position in the sorted folder,
or a video's 0-based frame index. A bottom-up (HigherHRNet) model finds every person itself.

In a video, camera or stream, people keep track ids from frame to frame (--track, greedy OKS
or box IoU matching) and are drawn in their track's colour; --smooth filters their keypoints
(One-Euro). --heatmaps draws the network's heatmaps under the skeletons. People scored below
--person_threshold are left out of the drawing (the JSON keeps them).

Output: an image (one input image), a folder of drawn images (a folder), or an mp4 with the
input's frame rate and size (a video, camera or stream), and beside it a JSON (--json, default
OUTPUT.json, or keypoints.json in an output folder): one entry per person with image_id,
keypoints (x, y, score per joint), score, box, the file name or frame index, and track_id.
Nothing that exists is overwritten.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import flags
import jax
import numpy as np

from ml_collections import config_flags

from hrnet_jax import detectors, drawing, errors, estimator, media, tasks, train_lib

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run folder (config and checkpoints).')
_MODEL = flags.DEFINE_string('model', None, 'Instead of --workdir: a zoo model name, a URL, '
                             'converted weights (folder) or a .pth.')
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, "The recipe of --model (default: the zoo model's).", lock_config=True)
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best' or a step number.")
_INPUT = flags.DEFINE_string('input', None, 'An image, a folder of images, a video file, a '
                             'camera index (0) or a stream URL.')
_OUTPUT = flags.DEFINE_string('output', None, 'Drawn image, folder or .mp4 to write.')
_DETECTOR = flags.DEFINE_string(
    'detector', 'hog', 'Person boxes of a top-down model: hog, none (whole images), a .onnx '
    'file or an hrnet_jax.onnx_detectors name.')
_BOXES = flags.DEFINE_string('boxes', None, 'COCO detection results JSON (person boxes), '
                             'instead of --detector.')
_BOX_THRESHOLD = flags.DEFINE_float('box_threshold', 0.5, 'Minimum score of --boxes.')
_THRESHOLD = flags.DEFINE_float('threshold', 0.3, 'Keypoints above this score are drawn.')
_PERSON_THRESHOLD = flags.DEFINE_float(
    'person_threshold', 0.2, 'People scored below are not drawn; the JSON keeps them (a '
    'bottom-up model reports every candidate, with no NMS, as the official test).')
_JSON = flags.DEFINE_string('json', None, 'Keypoints JSON to write (default: OUTPUT.json).')
_TRACK = flags.DEFINE_bool('track', True, 'Track ids across the frames of a video, camera or '
                           'stream.')
_SMOOTH = flags.DEFINE_bool('smooth', False, 'One-Euro smoothing of tracked keypoints.')
_SMOOTH_MIN_CUTOFF = flags.DEFINE_float('smooth_min_cutoff', 1.0,
                                        'One-Euro minimum cutoff (Hz): lower is smoother.')
_SMOOTH_BETA = flags.DEFINE_float('smooth_beta', 0.01, 'One-Euro speed coefficient: higher '
                                  'lags less in fast motion.')
_HEATMAPS = flags.DEFINE_bool('heatmaps', False, "Draw the network's heatmaps under the "
                              'skeletons (one more network call per frame).')
_FRAMES_PER_CALL = flags.DEFINE_integer(
    'frames_per_call', None, 'Frames whose people go through the network together (default '
    '8 from files, 1 from a camera or stream).')
_MAX_FRAMES = flags.DEFINE_integer('max_frames', None, 'Stop after this many frames.')
_BACKEND = flags.DEFINE_enum('backend', 'jax', tasks.BACKENDS, 'What runs a top-down '
                             "network: JAX, or its ONNX export in ONNX Runtime ('.[export]').")

REQUIRED_FLAGS = ('input', 'output')


def json_path(output: str, kind: str) -> str:
  """Where the keypoints JSON goes: --json, or beside (or in) the output."""
  return _JSON.value or (os.path.join(output, 'keypoints.json') if kind == 'folder'
                         else output + '.json')


def person_entry(frame: media.Frame, person: estimator.Person, kind: str) -> dict:
  """One person as a COCO results entry, with its box, frame or file name and track id."""
  entry = {'image_id': frame.image_id, 'category_id': 1,
           'keypoints': [round(float(v), 3) for v in np.concatenate(
               [person.keypoints, person.joint_scores[:, None]], axis=1).reshape(-1)],
           'score': float(person.score), 'box': [round(float(v), 2) for v in person.box]}
  if kind == 'video':
    entry['frame'] = frame.index
  else:
    entry['file_name'] = frame.name
  if person.track_id is not None:
    entry['track_id'] = person.track_id
  return entry


def main(argv: list[str]) -> int:
  """Loads the model and draws the poses of every input image or frame."""
  del argv
  missing = [f'--{name}' for name in REQUIRED_FLAGS if flags.FLAGS[name].value is None]
  if missing:
    raise errors.UserError(f'{" and ".join(missing)} required (see --help)')
  if bool(_WORKDIR.value) == bool(_MODEL.value):
    raise errors.UserError('pass either --workdir (a training run) or --model (a zoo name, URL, '
                           'converted folder or .pth)')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (image decoding only)
  tf.config.set_visible_devices([], 'GPU')
  source = media.open_input(_INPUT.value)  # a missing input fails before the model loads
  kind = media.output_kind(source)
  keypoints_json = json_path(_OUTPUT.value, kind)
  for path in (_OUTPUT.value, keypoints_json):
    if os.path.exists(path) and not (path == _OUTPUT.value and kind == 'folder' and
                                     not os.listdir(path)):
      raise errors.ExistingFileError(f'{path} already exists; refusing to overwrite it')
  model = _MODEL.value or _WORKDIR.value
  poses = estimator.PoseEstimator(model, config=_CONFIG.value, checkpoint=_CHECKPOINT.value,
                                  detector=None if _BOXES.value else _DETECTOR.value,
                                  backend=_BACKEND.value)
  train_lib.use_compilation_cache(poses.config)
  if _BOXES.value and not poses.takes_boxes:
    raise errors.UserError(f'--boxes {_BOXES.value}: {model} is a bottom-up model, which finds '
                           f'every person itself; drop --boxes')
  detections = (detectors.DetectionsFile(_BOXES.value, _BOX_THRESHOLD.value) if _BOXES.value
                else None)
  boxes_of = (lambda frame: detections.for_image(frame.image_id)) if detections else None
  people_from = (f'boxes of {_BOXES.value}' if _BOXES.value else
                 'bottom-up, no boxes' if not poses.takes_boxes else
                 'whole images as boxes' if poses.detector is None else
                 f'boxes of {type(poses.detector).__name__}')
  print(f'Model {poses.description}; {source.describe()}; {people_from}.', flush=True)
  smoothing = ({'min_cutoff': _SMOOTH_MIN_CUTOFF.value, 'beta': _SMOOTH_BETA.value}
               if _SMOOTH.value else None)
  output = media.open_output(_OUTPUT.value, source)
  done, results, start = _draw_all(poses, source, output, boxes_of, smoothing)
  with open(keypoints_json, 'w') as f:
    json.dump(results, f)
  elapsed = max(time.time() - start, 1e-9)
  unit = 'images' if kind != 'video' else 'frames'
  print(f'Wrote {_OUTPUT.value} and {keypoints_json}: {done} {unit}, {len(results)} people, '
        f'{done / elapsed:.1f} {unit}/s on {jax.device_count()} '
        f'{jax.devices()[0].platform} device(s).', flush=True)
  return 0


def _draw_all(poses: estimator.PoseEstimator, source: media.Input, output: media.Output,
              boxes_of, smoothing) -> tuple[int, list[dict], float]:
  """Predicts, draws and writes every frame; (frames done, JSON entries, start time)."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  kind = media.output_kind(source)
  total = source.count if _MAX_FRAMES.value is None else min(
      source.count or _MAX_FRAMES.value, _MAX_FRAMES.value)
  bar = tqdm(total=total, unit='frame' if kind == 'video' else 'image', dynamic_ncols=True,
             disable=kind == 'image' or not sys.stderr.isatty())
  draw_boxes = poses.takes_boxes and (poses.detector is not None or boxes_of is not None)
  results, done, start = [], 0, time.time()
  stream = poses.video(source, track=_TRACK.value and kind == 'video', smoothing=smoothing,
                       boxes_of=boxes_of, frames_per_call=_FRAMES_PER_CALL.value)
  try:
    for frame, people in stream:
      shown = [p for p in people if p.score >= _PERSON_THRESHOLD.value]
      drawn = frame.image
      if _HEATMAPS.value:
        boxes = np.asarray([p.box for p in shown]).reshape(-1, 4) if poses.takes_boxes else None
        drawn = drawing.draw_heatmaps(drawn, poses.heatmaps(drawn, bgr=True, boxes=boxes))
      track_ids = [p.track_id for p in shown] if _TRACK.value and kind == 'video' else None
      drawn = drawing.draw_people(drawn, estimator.people_array(shown), poses.keypoint_set,
                                  _THRESHOLD.value,
                                  [p.box for p in shown] if draw_boxes else None, track_ids)
      output.write(frame, drawn)
      results.extend(person_entry(frame, p, kind) for p in people)
      done += 1
      bar.update(1)
      if _MAX_FRAMES.value is not None and done >= _MAX_FRAMES.value:
        break
  except KeyboardInterrupt:  # a camera or stream runs until stopped
    print(f'\nStopped after {done} frames.', file=sys.stderr)
  finally:
    stream.close()
    bar.close()
    output.close()
  return done, results, start
