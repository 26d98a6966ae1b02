"""Video, camera and the ``hrnet-jax`` command: frames in and out on threads, track ids across
frames, the heatmap view, and the installed console script."""

import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from conftest import FIXTURES, OFFICIAL, REPO
from hrnet_jax import PoseEstimator, config_lib, drawing, errors, media

COCO = os.path.join(FIXTURES, 'real_data', 'coco')
SMALL_CONFIG = os.path.join(REPO, 'configs', 'small_hrnet.py')
SMALL_PTH = os.path.join(OFFICIAL, 'small_hrnet.pth')
SIZE, FPS, FRAMES = (320, 240), 15, 15
PATCH = (70, 110)  # w, h of each pasted person
STEP = 8  # pixels the walking person moves per frame


def person_patch(image_name: str, box) -> np.ndarray:
  x, y, w, h = box
  photo = cv2.imread(os.path.join(COCO, image_name))
  return cv2.resize(photo[y:y + h, x:x + w], PATCH, interpolation=cv2.INTER_AREA)


def clip_boxes(index: int) -> np.ndarray:
  """(2, 4) boxes of frame ``index``: the walking person, then the standing one."""
  return np.array([[10 + STEP * index, 60, *PATCH], [230, 100, *PATCH]], np.float64)


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
  """A 15-frame mp4 (320 x 240 at 15 fps): a real COCO person walks right past one standing."""
  walker = person_patch('000000000785.jpg', (281, 45, 219, 347))
  stander = person_patch('000000197388.jpg', (287, 62, 75, 166))
  path = str(tmp_path_factory.mktemp('clip') / 'walk.mp4')
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), FPS, SIZE)
  for i in range(FRAMES):
    frame = np.full((SIZE[1], SIZE[0], 3), 128, np.uint8)
    for patch, (x, y, w, h) in zip((walker, stander), clip_boxes(i).astype(int)):
      frame[y:y + h, x:x + w] = patch
    writer.write(frame)
  writer.release()
  return path


@pytest.fixture(scope='module')
def estimator():
  """The official small HRNet from its .pth and recipe file (no detector: boxes are given)."""
  return PoseEstimator(SMALL_PTH, config=SMALL_CONFIG, detector=None)


def test_a_walking_person_keeps_one_track_id_in_every_frame(clip, estimator):
  source = media.open_input(clip)
  assert (source.kind, source.count, source.fps, source.size) == ('video', FRAMES, FPS, SIZE)

  def boxes_of(frame):  # listed in a different order on odd frames
    boxes = clip_boxes(frame.index)
    order = [1, 0] if frame.index % 2 else [0, 1]
    return boxes[order], np.array([0.9, 0.8])[order]

  walker, stander = [], []
  for frame, people in estimator.video(source, boxes_of=boxes_of):
    assert frame.image.shape == (SIZE[1], SIZE[0], 3)
    by_x = sorted(people, key=lambda p: p.box[0] == 230)  # the walker first
    np.testing.assert_array_equal([p.box for p in by_x], clip_boxes(frame.index))
    walker.append(by_x[0].track_id)
    stander.append(by_x[1].track_id)
  assert len(walker) == FRAMES
  assert len(set(walker)) == 1 and len(set(stander)) == 1 and walker[0] != stander[0]
  # Without tracking, no ids.
  _, people = next(iter(estimator.video(clip, boxes_of=boxes_of, track=False)))
  assert all(p.track_id is None for p in people)


def test_video_of_arrays_gives_what_single_calls_give(estimator):
  photo = cv2.imread(os.path.join(COCO, '000000197388.jpg'))
  frames = [photo, photo[:, ::-1].copy(), photo]
  box = [(139.0, 102.0, 222.0, 242.0)]
  out = list(estimator.video(frames, bgr=True, track=False, frames_per_call=2,
                             boxes_of=lambda f: (np.array(box), np.ones(1))))
  assert [f.index for f, _ in out] == [0, 1, 2]
  for (frame, people), image in zip(out, frames):
    alone = estimator(image, bgr=True, boxes=box)
    # float32 network outputs of crops batched differently: 1e-4 px.
    np.testing.assert_allclose(people[0].keypoints, alone[0].keypoints, rtol=0, atol=1e-4)


def test_a_camera_that_does_not_exist_is_a_clear_error_not_a_hang():
  start = time.monotonic()
  with pytest.raises(errors.UserError, match='camera 97 cannot be opened'):
    media.open_input(97)
  with pytest.raises(errors.UserError, match='camera 96 cannot be opened'):
    media.open_input('96')
  assert time.monotonic() - start < 60  # measured: a few ms


def test_input_errors_name_the_file(tmp_path):
  with pytest.raises(errors.MissingFileError, match='nothing.mp4'):
    media.open_input(str(tmp_path / 'nothing.mp4'))
  (tmp_path / 'notes.txt').write_text('x')
  with pytest.raises(errors.UserError, match='notes.txt: expected an image'):
    media.open_input(str(tmp_path / 'notes.txt'))
  folder = tmp_path / 'frames'
  folder.mkdir()
  cv2.imwrite(str(folder / 'a.jpg'), np.zeros((8, 8, 3), np.uint8))
  (folder / 'b.jpg').write_bytes(b'not a jpeg')
  frames = iter(media.open_input(str(folder)))
  assert next(frames).name == 'a.jpg'
  with pytest.raises(errors.UserError, match='b.jpg'):  # raised from the reading thread
    next(frames)


def test_outputs_keep_rate_and_size_and_never_overwrite(clip, tmp_path):
  source = media.open_input(clip)
  out = str(tmp_path / 'out.mp4')
  writer = media.open_output(out, source)
  for frame in source:
    writer.write(frame, frame.image)
  writer.close()
  capture = cv2.VideoCapture(out)
  assert capture.get(cv2.CAP_PROP_FPS) == FPS
  assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == SIZE
  assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == FRAMES
  with pytest.raises(errors.ExistingFileError, match='out.mp4 already exists'):
    media.open_output(out, source)
  photo = media.open_input(os.path.join(COCO, '000000197388.jpg'))
  bad = media.open_output(str(tmp_path / 'drawn.unknown'), photo)
  bad.write(*[(f, f.image) for f in photo][0])
  with pytest.raises(errors.UserError, match='drawn.unknown: OpenCV cannot write'):
    bad.close()


def test_heatmap_view_maps_each_heatmap_peak_to_its_keypoint():
  config = config_lib.override(
      config_lib.load_recipe(SMALL_CONFIG), {'test.flip_test': False, 'test.post_process': False})
  plain = PoseEstimator(SMALL_PTH, config=config, detector=None)
  path = os.path.join(COCO, '000000197388.jpg')
  box = (139.0, 102.0, 222.0, 242.0)
  person, = plain(path, boxes=[box])
  (maps, matrix), = plain.heatmaps(path, boxes=[box])
  assert maps.shape == (32, 24, 17) and matrix.shape == (2, 3)
  # Without flip test and sub-pixel shift a keypoint is its heatmap's argmax mapped back
  # (where the maximum is above 0, as officially): the view's image -> heatmap matrix takes
  # it back there (1e-3 heatmap px). The view's network is compiled apart from the
  # predictor's, so joints whose best two pixels tie to 1e-4 of the maximum are left out.
  flat = np.sort(maps.reshape(-1, maps.shape[-1]), axis=0)
  clear = (flat[-1] - flat[-2]) > 1e-4 * np.abs(flat[-1])
  checked = np.flatnonzero((person.joint_scores > 0) & clear)
  assert len(checked) >= 5
  for j in checked:
    x, y = person.keypoints[j]
    row, col = np.unravel_index(np.argmax(maps[..., j]), maps.shape[:2])
    np.testing.assert_allclose(matrix @ [x, y, 1.0], [col, row], rtol=0, atol=1e-3)
  image = cv2.imread(path)
  drawn = drawing.draw_heatmaps(image, [(maps, matrix)])
  assert drawn.shape == image.shape and drawn.dtype == np.uint8
  # Outside the box's crop (x 1.25, to the model's aspect ratio) the image is unchanged.
  np.testing.assert_array_equal(drawn[:, :100], image[:, :100])
  assert np.abs(drawn[150:300, 200:300].astype(int) - image[150:300, 200:300]).max() > 0


def command(*args, timeout=600):
  """The installed ``hrnet-jax`` console script (pip install -e . puts it beside python)."""
  script = os.path.join(os.path.dirname(sys.executable), 'hrnet-jax')
  assert os.path.isfile(script), f'{script}: pip install -e . did not install the command'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([script, *args], capture_output=True, text=True, timeout=timeout,
                        env=env, cwd=str(os.path.dirname(REPO)))


def test_hrnet_jax_predict_help_runs_from_the_installed_command():
  result = command('predict', '--help')
  assert result.returncode == 0, result.stderr[-2000:]
  for flag in ('--model', '--input', '--detector', '--track', '--smooth', '--heatmaps'):
    assert flag in result.stdout
  assert command('bogus').returncode == 2


def test_hrnet_jax_predict_on_a_video_writes_tracked_frames_and_a_frame_numbered_json(
    clip, tmp_path):
  detections = [{'image_id': i, 'category_id': 1, 'bbox': box.tolist(), 'score': 0.9}
                for i in range(FRAMES) for box in clip_boxes(i)]
  boxes = tmp_path / 'boxes.json'
  boxes.write_text(json.dumps(detections))
  out = str(tmp_path / 'drawn.mp4')
  result = command('predict', f'--model={SMALL_PTH}', f'--config={SMALL_CONFIG}',
                   f'--input={clip}', f'--output={out}', f'--boxes={boxes}', '--smooth')
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  assert f'{FRAMES} frames, {2 * FRAMES} people' in result.stdout
  capture = cv2.VideoCapture(out)
  assert capture.get(cv2.CAP_PROP_FPS) == FPS and capture.get(cv2.CAP_PROP_FRAME_COUNT) == FRAMES
  with open(out + '.json') as f:
    people = json.load(f)
  assert sorted({p['frame'] for p in people}) == list(range(FRAMES))
  walker = {p['track_id'] for p in people if p['box'][0] != 230}
  stander = {p['track_id'] for p in people if p['box'][0] == 230}
  assert len(walker) == 1 and len(stander) == 1 and walker != stander
  assert all(len(p['keypoints']) == 17 * 3 for p in people)
