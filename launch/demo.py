r"""Runs a trained model on images, a folder of images or a video, and draws poses.

python launch/demo.py --workdir=DIR --input=IMAGE|VIDEO|FOLDER --output=PATH \
    [--boxes=DETECTIONS.json] [--checkpoint=latest|best|STEP] [--threshold=0.3]
python launch/demo.py --model=ZOO_NAME --input=... --output=...
python launch/demo.py --model=URL|FOLDER|FILE.pth --config=configs/....py --input=... --output=...

--model takes a zoo model (hrnet_jax/zoo.py: downloaded, verified and converted on first use,
then read from the cache with no network) with its recipe and test settings, or weights of
any other source with the --config of their model.

People scored below --person_threshold (0.2) are left out of the drawing. A bottom-up
(HigherHRNet) run finds every person of a whole image by itself: no --boxes.
For a top-down HRNet run, boxes come from a COCO detection results file (category 1, score
above --box_threshold); a detection's image_id is matched to the number in an image's file
name (COCO style, 000000000139.jpg -> 139) or else to its 0-based position in the sorted
folder, and for a video to the 0-based frame index. Without --boxes the whole image or frame
is one box.

Output: an image (one input image), a folder of drawn images (a folder), or an mp4 (a
video), and beside it a COCO results JSON (--json, default OUTPUT.json) with the keypoints
of every person, its image_id and the file name or frame index.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Iterator

from absl import flags
import cv2
import jax
import numpy as np
import tensorflow as tf

from ml_collections import config_flags

from hrnet_jax import (cli, detectors, drawing, errors, estimator, sharding, tasks,
                       train_lib)

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run folder (config and checkpoints).')
_MODEL = flags.DEFINE_string('model', None, 'Instead of --workdir: a zoo model name, a URL, '
                             'converted weights (folder) or a .pth.')
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, "The recipe of --model (default: the zoo model's).", lock_config=True)
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best' or a step number.")
_INPUT = flags.DEFINE_string('input', None, 'An image, a folder of images or a video file.')
_OUTPUT = flags.DEFINE_string('output', None, 'Drawn image, folder or .mp4 to write.')
_BOXES = flags.DEFINE_string('boxes', None, 'COCO detection results JSON (person boxes).')
_BOX_THRESHOLD = flags.DEFINE_float('box_threshold', 0.5, 'Minimum detection score.')
_THRESHOLD = flags.DEFINE_float('threshold', 0.3, 'Keypoints above this score are drawn.')
_PERSON_THRESHOLD = flags.DEFINE_float(
    'person_threshold', 0.2, 'People scored below are not drawn; the JSON keeps them (a '
    'bottom-up model reports every candidate, with no NMS, as the official test).')
_JSON = flags.DEFINE_string('json', None, 'Keypoints JSON to write (default: OUTPUT.json).')

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm')
FRAMES_PER_CALL = 16  # frames whose people go through the predictor together


def frames(input_path: str) -> tuple[str, Iterator[tuple[int, str, np.ndarray]], int, float]:
  """(kind, iterator of (image_id, name, BGR frame), count, fps) of an image, folder or video."""
  if os.path.isdir(input_path):
    names = sorted(n for n in os.listdir(input_path) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
      raise errors.MissingFileError(f'{input_path}: no images ({", ".join(IMAGE_EXTENSIONS)})')

    def folder():
      for i, name in enumerate(names):
        yield detectors.image_id_of(name, i), name, read_image(os.path.join(input_path, name))
    return 'folder', folder(), len(names), 0.0
  if not os.path.exists(input_path):
    raise errors.MissingFileError(f'--input {input_path} does not exist')
  if input_path.lower().endswith(VIDEO_EXTENSIONS):
    capture = cv2.VideoCapture(input_path)
    if not capture.isOpened():
      raise errors.UserError(f'{input_path}: opencv cannot open this video')
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0

    def video():
      index = 0
      while True:
        ok, frame = capture.read()
        if not ok:
          break
        yield index, f'frame {index}', frame
        index += 1
      capture.release()
    return 'video', video(), count, fps
  return 'image', iter([(detectors.image_id_of(input_path, 0), os.path.basename(input_path),
                         read_image(input_path))]), 1, 0.0


def read_image(path: str) -> np.ndarray:
  """A BGR image with the pixels evaluation reads (``tasks.read_rgb``: EXIF orientation
  ignored, as officially), or an error naming the file."""
  return cv2.cvtColor(tasks.read_rgb(path), cv2.COLOR_RGB2BGR)


def progress(done: int, total: int, start: float, what: str) -> None:
  """One-line progress bar on stderr."""
  rate = done / max(time.time() - start, 1e-9)
  width = 30
  filled = int(width * done / total) if total else width
  bar = '#' * filled + '.' * (width - filled)
  eta = f' ETA {int((total - done) / rate)} s' if total and rate else ''
  sys.stderr.write(f'\r[{bar}] {done}/{total or "?"} {what} {rate:.1f}/s{eta}  ')
  sys.stderr.flush()


def main(argv: list[str]) -> int:
  """Restores the model and draws the poses of every input image or frame."""
  del argv
  tf.config.set_visible_devices([], 'GPU')
  if bool(_WORKDIR.value) == bool(_MODEL.value):
    raise errors.UserError('pass either --workdir (a training run) or --model (a zoo name, URL, '
                           'converted folder or .pth)')
  mesh = sharding.data_mesh()
  config, variables, what = estimator.load_model(_MODEL.value or _WORKDIR.value, _CONFIG.value,
                                                 _CHECKPOINT.value, mesh)
  train_lib.use_compilation_cache(config)
  predictor = tasks.get_task(config).predictor(variables, mesh)
  if _BOXES.value and not predictor.takes_boxes:
    raise errors.UserError(f'--boxes {_BOXES.value}: {_WORKDIR.value or _MODEL.value} is a '
                           f'bottom-up model, which finds every person itself; drop --boxes')
  detections = (detectors.DetectionsFile(_BOXES.value, _BOX_THRESHOLD.value) if _BOXES.value
                else None)
  kind, stream, total, fps = frames(_INPUT.value)
  output = _OUTPUT.value
  if os.path.exists(output) and (kind != 'folder' or os.listdir(output)):
    raise errors.ExistingFileError(f'{output} already exists; refusing to overwrite it')
  json_path = _JSON.value or (os.path.join(output, 'keypoints.json') if kind == 'folder'
                              else output + '.json')
  writer = None
  if kind == 'folder':
    os.makedirs(output, exist_ok=True)
  results, start, done = [], time.time(), 0
  people_from = (f'boxes of {_BOXES.value}' if _BOXES.value else
                 'whole images as boxes' if predictor.takes_boxes else 'bottom-up, no boxes')
  print(f'Model {what}; {total} {kind} frame(s) from {_INPUT.value}; '
        f'{people_from}.', flush=True)
  for chunk in _chunks(stream, FRAMES_PER_CALL):
    # Without a boxes file each frame is one box (top-down) or searched whole (bottom-up);
    # with one, a frame it lists no boxes for has no people.
    listed = [detections.for_image(image_id) if detections else (None, None)
              for image_id, _, _ in chunk]
    boxes, box_scores = [b for b, _ in listed], [s for _, s in listed]
    found = predictor([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for _, _, frame in chunk],
                      boxes if _BOXES.value else None, box_scores)
    for (image_id, name, frame), people in zip(chunk, found):
      shown = people.scores >= _PERSON_THRESHOLD.value
      drawn = drawing.draw_people(frame, people.as_array()[shown], predictor.keypoint_set,
                                  _THRESHOLD.value, people.boxes[shown] if _BOXES.value else None)
      if kind == 'video':
        if writer is None:
          writer = cv2.VideoWriter(output, cv2.VideoWriter_fourcc(*'mp4v'), fps,
                                   (frame.shape[1], frame.shape[0]))
        writer.write(drawn)
      elif kind == 'folder':
        cv2.imwrite(os.path.join(output, os.path.splitext(name)[0] + '.jpg'), drawn)
      elif not cv2.imwrite(output, drawn):
        raise errors.UserError(f'{output}: opencv cannot write an image with this extension')
      for person, score in zip(people.as_array(), people.scores):
        entry = {'image_id': image_id, 'category_id': 1,
                 'keypoints': [round(float(v), 3) for v in person.reshape(-1)],
                 'score': float(score)}
        entry['frame' if kind == 'video' else 'file_name'] = (
            image_id if kind == 'video' else name)
        results.append(entry)
      done += 1
      if kind != 'image':
        progress(done, total, start, 'frames' if kind == 'video' else 'images')
  if writer is not None:
    writer.release()
  if kind != 'image':
    sys.stderr.write('\n')
  with open(json_path, 'w') as f:
    json.dump(results, f)
  print(f'Wrote {output} and {json_path}: {done} {"frames" if kind == "video" else "images"}, '
        f'{len(results)} people, {done / (time.time() - start):.1f} images/s '
        f'on {jax.device_count()} {jax.devices()[0].platform} device(s).', flush=True)
  return 0


def _chunks(iterator, size: int):
  """Lists of up to ``size`` consecutive items."""
  chunk = []
  for item in iterator:
    chunk.append(item)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


if __name__ == '__main__':
  flags.mark_flags_as_required(['input', 'output'])
  cli.run(main)
