"""PoseEstimator on the real COCO sample photos with the official small model; detectors."""

import os

import cv2
import numpy as np
import pytest

from conftest import FIXTURES, OFFICIAL, OFFICIAL_HIGHER, REPO
from hrnet_jax import PoseEstimator, config_lib, detectors, errors, models
from input_pipeline import coco

COCO = os.path.join(FIXTURES, 'real_data', 'coco')
PHOTOS = sorted(os.path.join(COCO, n) for n in os.listdir(COCO) if n.endswith('.jpg'))


def small_recipe():
  """The official small model's recipe (configs/small_hrnet.py)."""
  return config_lib.load_recipe(os.path.join(REPO, 'configs', 'small_hrnet.py'))


@pytest.fixture(scope='module')
def estimator():
  """The official small HRNet (a .pth and its config), each photo whole as one box."""
  return PoseEstimator(os.path.join(OFFICIAL, 'small_hrnet.pth'), config=small_recipe(),
                       detector=None)


def test_people_have_the_documented_shapes_inside_their_crops(estimator):
  for path in PHOTOS:
    people = estimator(path)
    height, width = cv2.imread(path).shape[:2]
    assert len(people) == 1  # no detector: the whole photo is one box
    person = people[0]
    assert person.keypoints.shape == (17, 2) and person.joint_scores.shape == (17,)
    assert person.box.shape == (4,) and isinstance(person.score, float)
    assert person.track_id is None
    np.testing.assert_array_equal(person.box, [0, 0, width, height])
    # The crop is the box padded to the model's aspect ratio (x 1.25): joints lie inside it.
    center, scale = coco.box_to_center_scale([0, 0, width, height], 96 / 128, 1.25)
    # (float32 centre and scale, as the predictor's: 1e-3 px)
    center, half = np.asarray(center, np.float64), np.asarray(scale, np.float64) * 200 / 2
    assert np.all(person.keypoints >= center - half - 1e-3)
    assert np.all(person.keypoints <= center + half + 1e-3)


def test_path_rgb_and_bgr_arrays_give_the_same_people(estimator):
  path = PHOTOS[0]
  bgr = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
  from_path = estimator(path)
  from_rgb = estimator(bgr[..., ::-1].copy())
  from_bgr = estimator(bgr, bgr=True)
  for a, b in ((from_path, from_rgb), (from_path, from_bgr)):
    assert len(a) == len(b)
    for p, q in zip(a, b):
      np.testing.assert_array_equal(p.keypoints, q.keypoints)
      np.testing.assert_array_equal(p.joint_scores, q.joint_scores)
      assert p.score == q.score


def test_a_list_gives_what_single_calls_give_and_boxes_replace_the_detector(estimator):
  boxes = [[(20.0, 30.0, 120.0, 200.0), (5.0, 5.0, 60.0, 90.0)], [], [(0.0, 0.0, 50.0, 50.0)]]
  together = estimator(PHOTOS[:3], boxes=boxes)
  assert [len(p) for p in together] == [2, 0, 1]
  for path, listed, people in zip(PHOTOS, boxes, together):
    alone = estimator(path, boxes=listed)
    assert len(alone) == len(people)
    for p, q in zip(alone, people):
      # float32 network outputs of crops batched differently: 1e-4 px.
      np.testing.assert_allclose(p.keypoints, q.keypoints, rtol=0, atol=1e-4)
      np.testing.assert_allclose(p.joint_scores, q.joint_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.reshape([p.box for p in people], (-1, 4)),
                                  np.reshape(listed, (-1, 4)))


def test_hog_finds_boxes_inside_a_real_photo():
  found_any = False
  for path in PHOTOS:
    image = cv2.imread(path)[..., ::-1]
    boxes, scores = detectors.HogDetector()(image)
    height, width = image.shape[:2]
    assert boxes.shape == (len(scores), 4)
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2:] > 0)
    assert np.all(boxes[:, 0] + boxes[:, 2] <= width)
    assert np.all(boxes[:, 1] + boxes[:, 3] <= height)
    assert np.all(np.diff(scores) <= 0)  # best first
    found_any |= len(boxes) > 0
  assert found_any


def test_a_bottom_up_model_needs_no_boxes_and_refuses_them():
  import json
  with open(os.path.join(OFFICIAL_HIGHER, 'small_higher_hrnet_config.json')) as f:
    c = json.load(f)
  config = config_lib.bottomup_config(width=32, input_size=128, batch_size=4)
  config.model = models.higher_hrnet_config(c['width'], c['blocks'], tuple(c['modules']),
                                            deconv_blocks=c['deconv_blocks'])
  estimator = PoseEstimator(os.path.join(OFFICIAL_HIGHER, 'small_higher_hrnet.pth'),
                            config=config)
  assert not estimator.takes_boxes and estimator.detector is None
  people = estimator(PHOTOS[0])
  assert all(p.keypoints.shape == (17, 2) for p in people)
  with pytest.raises(errors.UserError, match='bottom-up'):
    estimator(PHOTOS[0], boxes=[(0, 0, 10, 10)])


def test_bad_inputs_name_what_was_expected(estimator, tmp_path):
  with pytest.raises(errors.UserError, match=r'\(H, W, 3\)'):
    estimator(np.zeros((10, 10), np.uint8))
  with pytest.raises(errors.MissingFileError, match='nope.jpg'):
    estimator(str(tmp_path / 'nope.jpg'))
  with pytest.raises(errors.UserError, match='detector'):
    PoseEstimator(os.path.join(OFFICIAL, 'small_hrnet.pth'), config=small_recipe(),
                  detector='yolo')


def test_the_module_docstring_example_runs(monkeypatch):
  import doctest
  from hrnet_jax import estimator as module
  monkeypatch.chdir(REPO)
  result = doctest.testmod(module, raise_on_error=False, verbose=False)
  assert result.attempted >= 4 and result.failed == 0
