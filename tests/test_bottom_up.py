"""Bottom-up inference: the official resize, the network maps, and an oracle through COCOeval.

The oracle renders the official training targets (Gaussians at the ground-truth joints) and
perfect tags (one value per person) at the network input of each synthetic val image, and
sends them through the same grouping, projection and COCOeval as bottom-up evaluation.
"""

import json

import jax
import numpy as np
import pytest

from conftest import random_variables
from hrnet_jax import bottom_up, config_lib, errors, evaluation, grouping, models, predictors
from input_pipeline import bottom_up_targets, coco, synthetic

ORACLE_MIN_AP = 0.95  # the acceptance list's bound


def test_multi_scale_size_is_the_official():
  # A 480x640 (h x w) image at input 512: the short side to 512, the long one to 704 (64s).
  size, center, scale = bottom_up.multi_scale_size(480, 640, 512)
  assert size == (704, 512)
  np.testing.assert_array_equal(center, [320, 240])
  np.testing.assert_allclose(scale, [704 / 512 * 480 / 200, 2.4], rtol=1e-15)
  # Portrait, scale 2 of min scale 0.5: min input 256, then x4.
  size, center, scale = bottom_up.multi_scale_size(333, 250, 512, 2.0, 0.5)
  assert size == (1024, int(int((256 / 250 * 333 + 63) // 64 * 64) * 4))
  np.testing.assert_array_equal(center, [125, 167])


def torch_bilinear(x, height, width):
  """torch.nn.functional.interpolate(mode='bilinear', align_corners=False) of NHWC, numpy."""
  def axis(n_in, n_out):
    src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
    lo = np.minimum(np.floor(src).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo
  ylo, yhi, fy = axis(x.shape[1], height)
  xlo, xhi, fx = axis(x.shape[2], width)
  fy, fx = fy[None, :, None, None], fx[None, None, :, None]
  rows = x[:, ylo] * (1 - fy) + x[:, yhi] * fy
  return rows[:, :, xlo] * (1 - fx) + rows[:, :, xhi] * fx


def test_maps_follow_the_official_flip_test_and_projection():
  """Same as get_multi_stage_outputs + aggregate_results, recomputed in numpy (rtol 1e-5)."""
  config = config_lib.bottomup_config(width=4, input_size=64, batch_size=2)
  config.model = models.higher_hrnet_config(4, 1, (1, 1, 1), deconv_blocks=1)
  variables = random_variables(config.model)
  rng = np.random.default_rng(0)
  image = rng.normal(size=(1, 64, 128, 3)).astype(np.float32)
  det, tags = bottom_up.make_maps_fn(config)(variables, image, (64, 128))
  assert det.shape == (1, 64, 128, 17) and tags.shape == (1, 64, 128, 17, 2)

  apply = jax.jit(models.HigherHRNet(config.model).apply)
  perm = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])
  expected_det, expected_tags = 0, []
  for flip in (False, True):
    quarter, half = (np.asarray(o) for o in apply(variables, image[:, :, ::-1] if flip else image))
    heatmaps = (torch_bilinear(quarter[..., :17], 32, 64) + half) / 2
    tag = quarter[..., 17:]
    if flip:
      heatmaps, tag = heatmaps[:, :, ::-1][..., perm], tag[:, :, ::-1][..., perm]
    expected_det = expected_det + torch_bilinear(heatmaps, 64, 128) / 2
    expected_tags.append(torch_bilinear(tag, 64, 128))
  scale = np.abs(expected_det).max()
  np.testing.assert_allclose(det, expected_det, rtol=0, atol=1e-5 * scale)
  np.testing.assert_allclose(tags, np.stack(expected_tags, -1), rtol=0,
                             atol=1e-5 * np.abs(expected_tags).max())


@pytest.fixture(scope='module')
def val_set(tmp_path_factory):
  """30 synthetic val images with 1 to 4 people each."""
  root = str(tmp_path_factory.mktemp('bottom_up_oracle'))
  synthetic.write_dataset(root, num_train=1, num_val=30, seed=5, max_people=4)
  return root, coco.annotation_path(root, 'val')


def oracle_results(root, annotation_file, config, shift_px=0.0, seed=0):
  """COCO results of ground-truth heatmaps and perfect tags through grouping and projection."""
  with open(annotation_file) as f:
    data = json.load(f)
  rng = np.random.default_rng(seed)
  results = []
  for image in data['images']:
    people = [a for a in data['annotations'] if a['image_id'] == image['id']]
    (w, h), center, scale = bottom_up.multi_scale_size(image['height'], image['width'],
                                                       config.dataset.input_size)
    zoom = w / (scale[0] * 200)
    joints = np.array([a['keypoints'] for a in people], np.float64).reshape(-1, 17, 3)
    angle = rng.uniform(0, 2 * np.pi, joints.shape[:2])
    moved = joints[..., :2] + shift_px * np.stack([np.cos(angle), np.sin(angle)], -1)
    joints[..., :2] = (moved - center) * zoom + np.array([w, h]) / 2
    det = bottom_up_targets.multi_person_heatmaps(joints, h, w, config.dataset.sigma)
    tags = np.zeros((h, w, 17, 1), np.float32)
    for p, person in enumerate(joints):
      one = bottom_up_targets.multi_person_heatmaps(person[None], h, w, config.dataset.sigma)
      tags[one > 0.01] = 3.0 * (p + 1)  # where this person's Gaussian is, its tag
    keypoints, scores = bottom_up.group_people(det.transpose(2, 0, 1), tags.transpose(2, 0, 1, 3),
                                               center, scale, config.test)
    results += bottom_up.results_for_image(image['id'], keypoints, scores)
  return results


def test_oracle_reaches_ap_095_and_perturbation_lowers_it(val_set):
  root, annotation_file = val_set
  config = config_lib.bottomup_config(width=4, input_size=256, batch_size=2)
  metrics, _ = evaluation.coco_keypoint_eval(annotation_file,
                                             oracle_results(root, annotation_file, config))
  assert metrics['AP'] >= ORACLE_MIN_AP, metrics
  moved, _ = evaluation.coco_keypoint_eval(
      annotation_file, oracle_results(root, annotation_file, config, shift_px=4.0))
  assert moved['AP'] < metrics['AP'] - 0.05, (moved['AP'], metrics['AP'])


def test_predictor_device_nms_equals_host_parse_and_multi_scale_runs():
  config = config_lib.bottomup_config(width=4, input_size=64, batch_size=2)
  config.model = models.higher_hrnet_config(4, 1, (1, 1, 1), deconv_blocks=1)
  variables = random_variables(config.model, seed=3)
  image = np.random.default_rng(0).integers(0, 255, (70, 100, 3)).astype(np.uint8)
  predictor = predictors.BottomUpPredictor(config, variables)
  keypoints, scores = predictor.people(image)
  det, tags, center, scale = bottom_up.image_maps(config, variables, image,
                                                  bottom_up.make_maps_fn(config))
  assert det.shape == (64, 128, 17) and tags.shape == (64, 128, 17, 2)
  people, expected_scores = grouping.parse(det, tags)
  assert len(people) > 0 and keypoints.shape == (len(people), 17, 3)
  np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)
  # Back in the image: the 64x128 input is the image zoomed by 64 / 70 about its centre.
  zoom = 64 / 70
  np.testing.assert_allclose(keypoints[..., :2], (people[..., :2] - [64, 32]) / zoom + center,
                             rtol=1e-6)
  # The predictor interface: the same people, with person boxes around their joints.
  found, = predictor([image])
  np.testing.assert_array_equal(found.as_array(), keypoints)
  np.testing.assert_array_equal(found.scores, scores)
  inside = (found.joint_scores > 0)[..., None]
  corner = found.boxes[:, None, :2]
  assert np.all(~inside | (found.keypoints >= corner - 1e-9))
  assert np.all(~inside | (found.keypoints <= corner + found.boxes[:, None, 2:] + 1e-9))
  with pytest.raises(errors.UserError, match='pass no boxes'):
    predictor([image], boxes=[[(0, 0, 10, 10)]])
  config.test.scale_factors = (1.0, 0.5)
  many, _ = predictors.BottomUpPredictor(config, variables).people(image)
  assert many.ndim == 3 and many.shape[1:] == (17, 3)
  config.test.scale_factors = (0.5,)
  with pytest.raises(ValueError, match='must contain 1.0'):
    predictors.BottomUpPredictor(config, variables).people(image)
