"""UDP (Huang et al., CVPR 2020) against mmpose 1.x, and our DARK against mmpose's DARK.

The reference is tests/reference/mmpose_codecs.py: mmpose 1.x's functions transcribed
verbatim (commit 759b39c1 of github.com/open-mmlab/mmpose). Checked: UDP decoding (random and
oracle heatmaps), DARK decoding, UDP targets, the UDP warp matrix of training (TF, with
rotation and flip) and of evaluation (the device crops and the TF eval pipeline), and an
oracle through UDP targets, decoding and COCOeval.
"""

import json

import cv2
import numpy as np
import pytest
import tensorflow as tf

from hrnet_jax import config_lib, decode, errors, predictors, warp
from hrnet_jax import keypoints as kp
from input_pipeline import coco, pipeline, synthetic, transforms
from reference import mmpose_codecs as mm
from test_evaluation import score

COORD_TOL = 1e-3  # px, as the official decoders' tests
HEATMAP_TOL = 1e-6
MATRIX_TOL = 1e-5
ORACLE_TOL = 0.05  # image px: ground truth -> UDP targets -> UDP decoding -> image

# mmpose's refine_keypoints_dark, verbatim, passes np.maximum its output positionally.
pytestmark = pytest.mark.filterwarnings(
    'ignore:Passing more than 2 positional arguments:DeprecationWarning')

# (input size, heatmap size, sigma, blur kernel): mmpose's 256x192 and 384x288 sizes; kernel
# 17 is mmpose 0.x's for sigma 3 (1.x's UDP 384x288 recipe keeps 11).
SIZES = [((192, 256), (48, 64), 2.0, 11), ((288, 384), (72, 96), 3.0, 17)]


def random_heatmaps(rng, n, k, w, h, sigma=2.0):
  """Noise plus a Gaussian per joint anywhere (border maxima too); joint 0 of person 0 has
  no positive maximum, joint 1 is flat (ties: the first index wins)."""
  hm = rng.normal(0, 0.05, (n, k, h, w)).astype(np.float32)
  ys, xs = np.mgrid[0:h, 0:w]
  for i in range(n):
    for j in range(k):
      cx, cy = rng.uniform(-2, w + 1), rng.uniform(-2, h + 1)
      hm[i, j] += np.exp(-((xs - cx)**2 + (ys - cy)**2) / (2 * sigma**2)).astype(np.float32)
  hm[0, 0] = -1.0
  hm[0, 1] = 0.5
  return hm


def boxes(rng, n, input_size):
  """Centers and scales (/200) of boxes of the input's aspect ratio, as the eval pipeline's."""
  center = rng.uniform(50, 600, (n, 2))
  width = rng.uniform(60, 600, n) / 200
  return center, np.stack([width, width * input_size[1] / input_size[0]], axis=1)


def mmpose_udp(heatmaps_nkhw, center, scale, input_size, heatmap_size, blur_kernel):
  """mmpose 1.x: UDPHeatmap.decode of each person, then the top-down map to the image."""
  codec = mm.UDPHeatmap(input_size, heatmap_size, blur_kernel_size=blur_kernel)
  xy, scores = [], []
  for i, hm in enumerate(heatmaps_nkhw):
    keypoints, s = codec.decode(hm)
    xy.append(mm.topdown_to_image(keypoints[0], center[i], scale[i] * kp.PIXEL_STD,
                                  np.array(input_size)))
    scores.append(s[0])
  return np.array(xy), np.array(scores)


def nhwc(x):
  return np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 1))


# ------------------------------------------------------------------------- decoding ---


def assert_udp_decodes_as_mmpose(hm, center, scale, input_size, heatmap_size, blur_kernel):
  """Our UDP decoding of (N, K, H, W) heatmaps equals mmpose's: image coordinates to
  ``COORD_TOL``, scores exactly."""
  expected, scores = mmpose_udp(hm, center, scale, input_size, heatmap_size, blur_kernel)
  ours, maxvals = decode.heatmaps_to_keypoints(nhwc(hm), center, scale, decoder='udp',
                                               blur_kernel=blur_kernel)
  np.testing.assert_allclose(ours, expected, atol=COORD_TOL)
  np.testing.assert_array_equal(maxvals[..., 0], scores)


@pytest.mark.parametrize('input_size, heatmap_size, sigma, blur_kernel', SIZES)
def test_udp_decoding_equals_mmpose_on_random_heatmaps(input_size, heatmap_size, sigma,
                                                       blur_kernel):
  """Image coordinates to 1e-3 px (measured: 2e-13), scores exactly; the all-negative joint
  (mmpose starts it at (-1, -1)) and ties included."""
  rng = np.random.default_rng(blur_kernel)
  hm = random_heatmaps(rng, 6, 17, *heatmap_size, sigma=sigma)
  center, scale = boxes(rng, 6, input_size)
  assert_udp_decodes_as_mmpose(hm, center, scale, input_size, heatmap_size, blur_kernel)


@pytest.mark.parametrize('input_size, heatmap_size, sigma, blur_kernel', SIZES)
def test_udp_decoding_equals_mmpose_on_oracle_heatmaps(input_size, heatmap_size, sigma,
                                                       blur_kernel):
  """mmpose's own UDP targets of known joints (some near or past the border) decode as
  mmpose decodes them, to 1e-3 px, scores exactly."""
  rng = np.random.default_rng(1)
  n, k = 4, 17
  joints = rng.uniform(0, 1, (n, k, 2)) * (np.array(input_size) - 1)
  joints[:, :3] = rng.uniform(-4, 4, (n, 3, 2)) + np.array(input_size) * rng.integers(
      0, 2, (n, 3, 2))  # at a border
  codec = mm.UDPHeatmap(input_size, heatmap_size, sigma=sigma, blur_kernel_size=blur_kernel)
  hm = np.stack([codec.encode(joints[i:i + 1])['heatmaps'] for i in range(n)])
  center, scale = boxes(rng, n, input_size)
  assert_udp_decodes_as_mmpose(hm, center, scale, input_size, heatmap_size, blur_kernel)


@pytest.mark.parametrize('input_size, heatmap_size, sigma, blur_kernel', SIZES)
def test_dark_decoder_equals_mmpose_dark(input_size, heatmap_size, sigma, blur_kernel):
  """Our DARK decoder (``decoder='dark'``, the DARK authors' float64 code) equals mmpose 1.x's
  DARK decoding (``MSRAHeatmap(unbiased=True).decode``: ``refine_keypoints_dark`` with blur
  kernel 11 and 17, float32) mapped to the image as mmpose's top-down estimator, to 1e-3 px
  (measured: 3e-5). Left out: joints without a positive maximum, which start at (0, 0) as
  the official HRNet and at (-1, -1) in mmpose (neither refines them)."""
  rng = np.random.default_rng(2)
  hm = random_heatmaps(rng, 6, 17, *heatmap_size, sigma=sigma)
  center, scale = boxes(rng, 6, input_size)
  ours, maxvals = decode.heatmaps_to_keypoints(nhwc(hm), center, scale, decoder='dark',
                                               blur_kernel=blur_kernel)
  expected = []
  for i in range(len(hm)):
    keypoints, scores = mm.msra_dark_decode(hm[i], input_size, heatmap_size, blur_kernel)
    np.testing.assert_array_equal(maxvals[i, :, 0], scores[0])
    expected.append(mm.topdown_to_image(keypoints[0], center[i], scale[i] * kp.PIXEL_STD,
                                        np.array(input_size)))
  positive = maxvals[..., 0] > 0
  assert not positive[0, 0] and positive.sum() == positive.size - 1
  np.testing.assert_allclose(ours[positive], np.array(expected)[positive], atol=COORD_TOL)


def test_the_predictor_decodes_udp_as_heatmaps_to_keypoints():
  """The top-down predictor's host step (device argmax, host UDP, UDP map back) is
  ``heatmaps_to_keypoints(decoder='udp')``; the blur kernel comes from the config."""
  config = config_lib.override(udp_config(), {'test.blur_kernel': 17})
  rng = np.random.default_rng(3)
  hm = nhwc(random_heatmaps(rng, 4, 17, *config.dataset.heatmap_size))
  center, scale = boxes(rng, 4, config.dataset.image_size)
  coords, maxvals = decode.heatmap_coordinates(hm, post_process=False)
  predictor = predictors.TopDownPredictor(config, {})
  got = predictor._image_keypoints({'coords': np.asarray(coords), 'maxvals': np.asarray(maxvals),
                                    'heatmaps': hm, 'center': center, 'scale': scale})
  xy, scores = decode.heatmaps_to_keypoints(hm, center, scale, decoder='udp', blur_kernel=17)
  np.testing.assert_array_equal(got[..., :2], xy)
  np.testing.assert_array_equal(got[..., 2:], scores)


# -------------------------------------------------------------------------- targets ---


@pytest.mark.parametrize('input_size, heatmap_size, sigma', [s[:3] for s in SIZES] +
                         [((64, 64), (16, 16), 2.5)])
def test_udp_targets_equal_mmpose(input_size, heatmap_size, sigma):
  """``udp_gaussian_targets`` (and the batched pipeline's XLA form) equal mmpose's
  ``UDPHeatmap.encode`` to 1e-6, weights exactly, on joints inside, near and past the border
  (some wholly outside: weight 0) and unlabelled ones."""
  rng = np.random.default_rng(4)
  n, k = 8, 17
  size = np.array(input_size, np.float64)
  joints = rng.uniform(-0.2, 1.2, (n, k, 2)) * size
  joints[:, :4] = rng.uniform(-0.7, 0.7, (n, 4, 2)) * size + size * rng.integers(0, 2, (n, 4, 2))
  visible = (rng.uniform(size=(n, k)) < 0.8).astype(np.float64)
  keypoints = np.concatenate([joints, visible[..., None]], -1)
  heatmaps, weights = transforms.udp_gaussian_targets(
      keypoints, image_size=input_size, heatmap_size=heatmap_size, sigma=sigma)
  codec = mm.UDPHeatmap(input_size, heatmap_size, sigma=sigma)
  for i in range(n):
    encoded = codec.encode(joints[i:i + 1], visible[i:i + 1].astype(np.float32))
    np.testing.assert_allclose(heatmaps[i].numpy(), encoded['heatmaps'].transpose(1, 2, 0),
                               atol=HEATMAP_TOL, rtol=0)
    np.testing.assert_array_equal(weights[i].numpy(), encoded['keypoint_weights'][0])
  assert 0 < weights.numpy().sum() < visible.sum()  # some labelled joints fall outside

  spec = pipeline.SampleSpec(input_size, heatmap_size, sigma, kp.COCO_FLIP_PAIRS,
                             kp.COCO_UPPER_BODY_IDS, udp=True)
  batch = pipeline.finish_training_batch(spec)(
      {'image': tf.zeros((n, 2, 2, 3)), 'keypoints': tf.constant(keypoints)})
  np.testing.assert_allclose(batch['heatmaps'].numpy(), heatmaps.numpy(), atol=HEATMAP_TOL,
                             rtol=0)
  np.testing.assert_array_equal(batch['target_weight'].numpy()[..., 0], weights.numpy())


def test_udp_targets_mirror_exactly_so_the_flip_test_needs_no_shift():
  """A joint at input x and its mirror at w - 1 - x give mirrored UDP heatmaps: the flip test
  of a UDP model averages without the official one-pixel shift (mmpose's shift_heatmap=False)."""
  rng = np.random.default_rng(5)
  joints = rng.uniform(0, 1, (17, 2)) * np.array([191.0, 255.0])
  mirrored = np.stack([191.0 - joints[:, 0], joints[:, 1]], 1)
  ones = np.ones((17, 1))
  a, _ = transforms.udp_gaussian_targets(np.concatenate([joints, ones], 1), image_size=(192, 256),
                                         heatmap_size=(48, 64), sigma=2.0)
  b, _ = transforms.udp_gaussian_targets(np.concatenate([mirrored, ones], 1),
                                         image_size=(192, 256), heatmap_size=(48, 64), sigma=2.0)
  np.testing.assert_allclose(a.numpy(), b.numpy()[:, ::-1], atol=1e-6)


# --------------------------------------------------------------------------- warps ---


def reference_matrix(center, scale, rotation, output_size):
  """mmpose's get_udp_warp_matrix of our center and scale (box = scale x 200), float64 in."""
  return mm.get_udp_warp_matrix(np.asarray(center, np.float64),
                                np.asarray(scale, np.float64) * kp.PIXEL_STD, rotation,
                                output_size)


@pytest.mark.parametrize('rotation', [0.0, 30.0, -30.0])
def test_training_warp_is_mmpose_udp_warp(rotation):
  """The TF training path with ``udp=True``: its matrix is get_udp_warp_matrix to 1e-5 (mmpose
  stores float32; entries kept below 128 so that is within 1e-5), with the flip as mmpose's
  RandomFlip (image, joints and box center mirrored to w - 1 - x); joints follow the matrix
  and the targets are UDP's of the warped joints."""
  rng = np.random.default_rng(6)
  image = rng.integers(0, 256, (150, 200, 3)).astype(np.uint8)
  for _ in range(4):
    center = rng.uniform(40, 120, 2)
    scale = rng.uniform(120, 240) / 200 * np.array([1.0, 256 / 192])
    keypoints = np.concatenate([rng.uniform(20, 140, (17, 2)), np.ones((17, 1))], 1)
    assert np.allclose(transforms.udp_affine_matrix(center, scale, rotation, (192, 256)),
                       reference_matrix(center, scale, rotation, (192, 256)), atol=MATRIX_TOL,
                       rtol=0)
    for flip in (False, True):
      out = transforms.warp_and_target(
          image, keypoints, center, scale, rotation, flip, image_size=(192, 256),
          heatmap_size=(48, 64), sigma=2.0, flip_pairs=kp.COCO_FLIP_PAIRS, udp=True)
      c, xy = center.copy(), keypoints[:, :2].copy()
      if flip:  # mmpose's flip_bbox / flip_keypoints, then the left/right swap
        c[0] = 200 - 1 - c[0]
        perm = kp.flip_permutation(17, kp.COCO_FLIP_PAIRS)
        xy = np.stack([200 - 1 - xy[:, 0], xy[:, 1]], 1)[perm]
      matrix = reference_matrix(c, scale, rotation, (192, 256))
      np.testing.assert_allclose(out['matrix'].numpy(), matrix, atol=MATRIX_TOL, rtol=0)
      warped = xy @ matrix[:, :2].T.astype(np.float64) + matrix[:, 2]
      np.testing.assert_allclose(out['keypoints'][:, :2].numpy(), warped, atol=1e-3)
      encoded = mm.UDPHeatmap((192, 256), (48, 64)).encode(
          out['keypoints'][None, :, :2].numpy().astype(np.float64))
      np.testing.assert_allclose(out['heatmaps'].numpy(), encoded['heatmaps'].transpose(1, 2, 0),
                                 atol=1e-5)


def test_the_training_pipeline_reads_udp_from_the_spec():
  """``spec.udp`` reaches the tf.data sample (graph mode): the pipeline's warped image and
  joints are ``warp_and_target(udp=True)``'s under the same random draws (flip and rotation
  among them), not the official warp's."""
  rng = np.random.default_rng(8)
  image = rng.integers(0, 256, (150, 200, 3)).astype(np.uint8)
  ok, png = cv2.imencode('.png', image[..., ::-1])
  assert ok
  keypoints = np.concatenate([rng.uniform(20, 140, (17, 2)), np.ones((17, 1))], 1)
  center, scale = np.array([100.0, 75.0]), np.array([0.6, 0.8])
  spec = pipeline.SampleSpec((48, 64), (12, 16), 2.0, kp.COCO_FLIP_PAIRS,
                             kp.COCO_UPPER_BODY_IDS, udp=True)
  sample = tf.function(lambda c, seed: pipeline.training_sample(c, keypoints, center, scale,
                                                                seed, spec))
  draws = set()
  for step in range(6):
    seed = tf.constant([0, step], tf.int64)
    got_image, got_keypoints = sample(tf.constant(png.tobytes()), seed)
    c, s, rotation, flip = pipeline.augment_params(tf.constant(keypoints), center, scale, seed,
                                                   spec)
    draws.add((bool(flip), float(rotation) != 0))
    kwargs = dict(image_size=(48, 64), heatmap_size=(12, 16), sigma=2.0,
                  flip_pairs=kp.COCO_FLIP_PAIRS, with_targets=False)
    expected = transforms.warp_and_target(image, keypoints, c, s, rotation, flip, udp=True,
                                          **kwargs)
    official = transforms.warp_and_target(image, keypoints, c, s, rotation, flip, **kwargs)
    np.testing.assert_array_equal(got_image, expected['image'])
    np.testing.assert_array_equal(got_keypoints, expected['keypoints'])
    assert np.abs(got_keypoints.numpy() - official['keypoints'].numpy()).max() > 0.1
  assert len(draws) >= 3, draws


def test_eval_crop_warp_is_mmpose_udp_warp():
  """The device crops' matrices (``warp.udp_affine_matrices``) equal get_udp_warp_matrix at
  rotation 0 to 1e-5 and the TF function bit for bit; the predictor's crops and the TF eval
  pipeline's (``spec.eval_udp``) are the UDP warp of the image."""
  rng = np.random.default_rng(7)
  centers = rng.uniform(40, 120, (20, 2)).astype(np.float32)
  scales = (rng.uniform(100, 240, (20, 1)) / 200 * np.array([[1.0, 4 / 3]])).astype(np.float32)
  matrices = warp.udp_affine_matrices(centers, scales, (48, 64))
  for k in range(len(centers)):
    np.testing.assert_allclose(matrices[k], reference_matrix(centers[k], scales[k], 0.0, (48, 64)),
                               atol=MATRIX_TOL, rtol=0)
    np.testing.assert_array_equal(
        matrices[k], transforms.udp_affine_matrix(centers[k], scales[k], 0.0, (48, 64)).numpy())

  config = config_lib.override(udp_config(), {'dataset.image_size': (48, 64),
                                              'dataset.heatmap_size': (12, 16)})
  image = rng.integers(0, 256, (120, 160, 3)).astype(np.uint8)
  box = np.array([[30.0, 20.0, 60.0, 70.0]])
  crops, center, scale = predictors.TopDownPredictor(config, {}).crops(image, box)
  matrix = transforms.udp_affine_matrix(center[0], scale[0], 0.0, (48, 64))
  expected = transforms.warp_image(image, matrix, (48, 64))
  grey_level = 1 / (255 * min(transforms.IMAGENET_STD))
  assert np.abs(crops[0] - transforms.normalize(expected).numpy()).max() <= grey_level * 1.0001
  ok, png = cv2.imencode('.png', image[..., ::-1])
  assert ok
  spec = pipeline.SampleSpec((48, 64), (12, 16), 2.0, (), (), eval_udp=True)
  np.testing.assert_array_equal(
      pipeline.eval_sample(tf.constant(png.tobytes()), center[0], scale[0], spec), expected)


# -------------------------------------------------------------------------- oracle ---


def udp_config():
  config = config_lib.topdown_config(width=4, image_size=(192, 256), sigma=2, batch_size=8,
                                     test_batch_size=8)
  return config_lib.override(config, {'dataset.udp': True, 'test.decoder': 'udp',
                                      'test.shift_heatmap': False})


def test_oracle_ground_truth_through_udp_targets_and_decoding_scores_ap_1(tmp_path):
  """Ground-truth joints -> UDP eval crop -> UDP targets -> UDP decoding -> image: within
  0.05 px of the joints, and AP 1.0 through the project's rescoring, OKS NMS and COCOeval."""
  root = str(tmp_path / 'data')
  synthetic.write_dataset(root, num_train=1, num_val=12, seed=5)
  config = udp_config()
  d = config.dataset
  people = coco.load_ground_truth(root, 'val', aspect_ratio=192 / 256)
  matrices = warp.udp_affine_matrices(people.centers, people.scales, d.image_size)
  joints = (np.einsum('nij,nkj->nki', matrices[:, :, :2], people.keypoints[..., :2]) +
            matrices[:, None, :, 2])
  heatmaps, _ = transforms.udp_gaussian_targets(
      np.concatenate([joints, people.keypoints[..., 2:]], -1), image_size=d.image_size,
      heatmap_size=d.heatmap_size, sigma=d.sigma)
  xy, maxvals = decode.heatmaps_to_keypoints(heatmaps.numpy(), people.centers, people.scales,
                                             decoder='udp', blur_kernel=config.test.blur_kernel)
  labelled = people.keypoints[..., 2] > 0
  error = np.linalg.norm(xy - people.keypoints[..., :2], axis=-1)[labelled]
  assert error.max() < ORACLE_TOL, error.max()
  found = {'keypoints': np.concatenate([xy, maxvals], -1), 'center': people.centers,
           'scale': people.scales, 'score': people.scores, 'image_id': people.image_ids}
  metrics = score(config, found, coco.annotation_path(root, 'val'), str(tmp_path / 'eval'))
  assert metrics['AP'] == 1.0, metrics


# -------------------------------------------------------------------------- config ---


def test_udp_config_keys_checks_and_old_saved_configs(tmp_path):
  """The keys default off (every recipe unchanged); 'udp' with the shifted flip and an even
  blur kernel are errors; a run saved before the keys existed loads with the defaults."""
  config = config_lib.topdown_config(width=4, image_size=(192, 256), sigma=2, batch_size=8,
                                     test_batch_size=8)
  assert config.dataset.udp is False and config.test.blur_kernel == 11
  assert 'udp' in decode.DECODERS
  with pytest.raises(errors.ConfigError, match='shift_heatmap=False'):
    predictors.make_crop_predict_fn(config_lib.override(config, {'test.decoder': 'udp'}),
                                    predictors.sharding.data_mesh())
  with pytest.raises(errors.ConfigError, match='blur_kernel'):
    predictors.make_crop_predict_fn(config_lib.override(config, {'test.blur_kernel': 10}),
                                    predictors.sharding.data_mesh())
  predictors.make_crop_predict_fn(udp_config(), predictors.sharding.data_mesh())

  saved = config.to_dict()
  del saved['dataset']['udp'], saved['test']['blur_kernel']
  with open(tmp_path / config_lib.CONFIG_FILE, 'w') as f:
    json.dump(saved, f)
  loaded = config_lib.load_saved_config(str(tmp_path))
  assert loaded.dataset.udp is False and loaded.test.blur_kernel == 11
  assert loaded.to_dict() == config_lib.load_saved_config(str(tmp_path)).to_dict()


def test_the_task_passes_the_udp_keys_to_the_sample_spec():
  """One key each decides: ``dataset.udp`` the training warp and targets, ``test.decoder`` the
  eval crops (``tasks.sample_spec`` reads both into the spec the pipelines share)."""
  from hrnet_jax import tasks
  official = tasks.sample_spec(config_lib.topdown_config(
      width=4, image_size=(192, 256), sigma=2, batch_size=8, test_batch_size=8))
  assert not official.udp and not official.eval_udp
  spec = tasks.sample_spec(udp_config())
  assert spec.udp and spec.eval_udp, (
      "tasks.sample_spec must pass udp=bool(config.dataset.udp) and "
      "eval_udp=config.test.decoder == 'udp' to pipeline.SampleSpec")
