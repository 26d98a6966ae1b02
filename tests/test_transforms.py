"""Top-down transforms against the official fixtures and the official code on random cases."""

import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

import official_reference as ref
from conftest import OFFICIAL
from hrnet_jax import keypoints as kp
from input_pipeline import coco, transforms

# Tolerances of the acceptance list: joints 1e-3 px, heatmaps 1e-5, target weights equal,
# warped image mean |diff| <= 0.5 and 99th percentile <= 3 grey levels.
JOINT_TOL, HEATMAP_TOL, IMAGE_MEAN_TOL, IMAGE_P99_TOL = 1e-3, 1e-5, 0.5, 3.0

with open(os.path.join(OFFICIAL, 'train_sample_cases.json')) as f:
  META = json.load(f)
CASES = np.load(os.path.join(OFFICIAL, 'train_sample_cases.npz'))
IMAGE_SIZE, HEATMAP_SIZE = tuple(META['image_size_wh']), tuple(META['heatmap_size_wh'])


def run(image, joints, vis, center, scale, rotation, flip, sigma=META['sigma'],
        image_size=IMAGE_SIZE, heatmap_size=HEATMAP_SIZE):
  keypoints = np.concatenate([joints[:, :2], vis[:, :1]], axis=1)
  out = transforms.warp_and_target(image, keypoints, center, scale, rotation, flip,
                                   image_size=image_size, heatmap_size=heatmap_size,
                                   sigma=sigma, flip_pairs=META['flip_pairs'])
  return {k: v.numpy() for k, v in out.items()}


def assert_sample_matches(out, affine, warped, joints_out, vis_out, target, weight):
  # The official matrix comes from float32 points: ~1e-7 relative rounding in its offsets.
  np.testing.assert_allclose(out['matrix'], affine, rtol=1e-6, atol=1e-4)
  labelled = vis_out[:, 0] > 0
  np.testing.assert_allclose(out['keypoints'][:, :2], joints_out[:, :2], atol=JOINT_TOL)
  np.testing.assert_array_equal(out['keypoints'][:, 2], vis_out[:, 0])
  np.testing.assert_array_equal(out['target_weight'], weight)
  np.testing.assert_allclose(out['heatmaps'], target.transpose(1, 2, 0), atol=HEATMAP_TOL)
  diff = np.abs(out['image'] - warped.astype(np.float32))
  assert out['image'].dtype == np.float32 and out['image'].shape == warped.shape
  assert diff.mean() <= IMAGE_MEAN_TOL and np.percentile(diff, 99) <= IMAGE_P99_TOL
  assert diff.max() <= 1.0  # stricter than asked: only cv2's fixed-point rounding differs
  assert labelled.any()


@pytest.mark.parametrize('i', range(META['count']))
def test_official_train_sample_cases(i):
  g = lambda name: CASES[f'{name}_{i}']
  out = run(g('image'), g('joints'), g('joints_vis'), g('center'), g('scale'),
            float(g('rotation')), bool(g('flip')))
  assert_sample_matches(out, g('affine'), g('input'), g('joints_out'), g('joints_vis_out'),
                        g('target'), g('target_weight'))


@pytest.mark.parametrize('seed', range(8))
def test_random_cases_match_the_official_code(seed):
  rng = np.random.default_rng(seed)
  h, w = rng.integers(120, 400, 2)
  image = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 1.0)
  if seed % 2:
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # worst case: pure noise
  joints = np.zeros((17, 3))
  joints[:, 0], joints[:, 1] = rng.uniform(-20, w + 20, 17), rng.uniform(-20, h + 20, 17)
  vis = np.repeat(rng.integers(0, 2, (17, 1)), 3, axis=1).astype(np.float64)
  vis[:, 2] = 0
  joints = joints * vis  # unlabelled joints are (0, 0) as in COCO
  sigma = [2, 3, 2.5][seed % 3]
  image_size = [(192, 256), (288, 384), (64, 96)][seed % 3]
  heatmap_size = (image_size[0] // 4, image_size[1] // 4)
  center = np.array([rng.uniform(0, w), rng.uniform(0, h)])
  scale = np.array([1.0, 4 / 3]) * rng.uniform(0.3, 2.0)
  rotation, flip = float(rng.uniform(-90, 90)), bool(seed % 3 == 1 or seed == 4)
  out = run(image, joints, vis, center, scale, rotation, flip, sigma, image_size, heatmap_size)
  trans, warped, j_out, v_out, target, weight = ref.train_sample(
      image, joints, vis, center, scale, rotation, flip, image_size, heatmap_size, sigma,
      META['flip_pairs'])
  assert_sample_matches(out, trans, warped, j_out, v_out, target, weight)


def test_inverse_affine_and_points():
  center, scale, rot = np.array([120.0, 80.0]), np.array([0.9, 1.2]), 30.0
  forward = transforms.affine_matrix(center, scale, rot, (192, 256)).numpy()
  inverse = transforms.affine_matrix(center, scale, rot, (192, 256), inverse=True).numpy()
  np.testing.assert_allclose(inverse, ref.get_affine_transform(center, scale, rot, (192, 256), 1),
                             atol=1e-4)
  pts = np.array([[10.0, 20.0], [150.0, 90.0]])
  back = transforms.apply_affine(transforms.apply_affine(pts, forward), inverse).numpy()
  np.testing.assert_allclose(back, pts, atol=1e-9)


@pytest.mark.parametrize('seed', range(6))
def test_half_body_matches_official(seed):
  rng = np.random.default_rng(100 + seed)
  joints = np.concatenate([rng.uniform(0, 300, (17, 2)), np.zeros((17, 1))], axis=1)
  vis = np.repeat((rng.random((17, 1)) < [0.9, 0.5, 0.2][seed % 3]), 3, axis=1).astype(float)
  draw = float(rng.normal())
  expected_c, expected_s = ref.half_body_transform(joints, vis, kp.COCO_UPPER_BODY_IDS, 0.75, draw)
  keypoints = np.concatenate([joints[:, :2], vis[:, :1]], axis=1)
  c, s, ok = transforms.half_body_center_scale(keypoints, kp.COCO_UPPER_BODY_IDS, 0.75, draw)
  assert bool(ok) == (expected_c is not None)
  if expected_c is not None:
    np.testing.assert_allclose(c.numpy(), expected_c, rtol=1e-6)
    np.testing.assert_allclose(s.numpy(), expected_s, rtol=1e-6)


def test_box_to_center_scale_is_official():
  c, s = coco.box_to_center_scale([10, 20, 30, 100], 0.75)
  np.testing.assert_allclose(c, [25, 70])
  np.testing.assert_allclose(s, np.array([75 / 200, 100 / 200], np.float32) * 1.25)
  assert c.dtype == s.dtype == np.float32
  c, s = coco.box_to_center_scale([0, 0, 150, 100], 0.75)
  np.testing.assert_allclose(s, np.array([150 / 200, 200 / 200], np.float32) * 1.25)


def test_transforms_run_inside_tf_data():
  image = np.zeros((100, 80, 3), np.uint8)
  keypoints = np.tile([[40.0, 50.0, 2.0]], (17, 1))
  ds = tf.data.Dataset.from_tensors((image, keypoints)).map(
      lambda im, k: transforms.warp_and_target(
          im, k, [40.0, 50.0], [0.5, 0.66], 10.0, True, image_size=(64, 96),
          heatmap_size=(16, 24), sigma=2, flip_pairs=kp.COCO_FLIP_PAIRS))
  out = next(iter(ds))
  assert out['heatmaps'].shape == (24, 16, 17) and out['image'].shape == (96, 64, 3)


def test_windowed_jpeg_decode_matches_full_decode(tmp_path):
  """The pipeline decodes only the warp's window: the warp of the full decode, bit for bit."""
  rng = np.random.default_rng(5)
  image = cv2.GaussianBlur(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8), (0, 0), 2)
  path = str(tmp_path / 'x.jpg')
  cv2.imwrite(path, image)
  contents = tf.io.read_file(path)
  decoded = transforms.decode(contents)  # cv2's pixels (TF's default IDCT differs)
  keypoints = np.concatenate([rng.uniform(0, 300, (17, 2)), np.ones((17, 1))], axis=1)
  for center, scale, rotation, flip in [((200, 150), (1.0, 1.33), 30.0, True),
                                        ((20, 10), (0.3, 0.4), -10.0, False),
                                        ((-300, 500), (0.5, 0.66), 0.0, False)]:
    kwargs = dict(image_size=(96, 128), heatmap_size=(24, 32), sigma=2,
                  flip_pairs=kp.COCO_FLIP_PAIRS)
    full = transforms.warp_and_target(decoded, keypoints, center, scale, rotation, flip, **kwargs)
    window = transforms.jpeg_warp_and_target(contents, keypoints, center, scale, rotation, flip,
                                             **kwargs)
    np.testing.assert_array_equal(full['image'], window['image'])
    np.testing.assert_array_equal(full['heatmaps'], window['heatmaps'])


def test_warp_buckets_bound_compiles_and_padding():
  """Image sizes share XLA compiles by bucket: few buckets, each at most ~1.42x the image."""
  sizes = np.unique(np.arange(1, 641)[:, None] * np.arange(1, 641)[None, :])
  buckets = transforms._bucket_rows(tf.constant(sizes, tf.int32)).numpy()
  assert (buckets >= sizes).all() and (buckets % 1024 == 0).all()
  assert (buckets <= np.maximum(sizes * np.sqrt(2) + 1024, 2048)).all()
  assert len(np.unique(buckets)) <= 20  # every image up to 640x640 (COCO's largest)
