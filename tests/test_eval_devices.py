"""Evaluation and prediction on every device: the device warp and the batched bottom-up test.

The references are the host paths these replaced: ``transforms.warp_image`` (TF) for the warp,
and the one-image bottom-up path (host warp, one jitted call per image) for the people. The
multi-device check runs in a subprocess with 4 simulated CPU devices (this file is its script).
"""

import json
import os
import subprocess
import sys

import cv2
import jax
import numpy as np

from conftest import random_variables
from hrnet_jax import bottom_up, config_lib, models, predictors, sharding, tasks, warp
from input_pipeline import coco, synthetic, transforms

GREY_LEVEL = 1 / (255 * min(transforms.IMAGENET_STD))  # one grey level, normalised


def photo_like(rng, image_id, size_range=(120, 400)):
  """A synthetic crowd (textured background, anti-aliased people, occluders) through JPEG, RGB."""
  bgr, _ = synthetic.make_image(rng, image_id, size_range, 4)
  ok, jpeg = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
  assert ok
  return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def test_affine_matrices_and_inverse_are_the_tf_ones_bit_for_bit():
  rng = np.random.default_rng(0)
  centers = rng.uniform(-50, 900, (200, 2)).astype(np.float32)
  scales = rng.uniform(0.05, 6, (200, 2)).astype(np.float32)
  matrices = warp.affine_matrices(centers, scales, (192, 256))
  xs, ys = warp.sample_coordinates(matrices, (192, 256))
  for k in range(len(centers)):
    expected = transforms.affine_matrix(centers[k], scales[k], 0.0, (192, 256)).numpy()
    np.testing.assert_array_equal(matrices[k], expected)
    inverse = np.linalg.inv(np.vstack([expected, [0, 0, 1]]))[:2].astype(np.float32)
    # Each coordinate is the float32 a * i + c rounded once (float64 holds it exactly).
    assert xs[k, 100] == np.float32(np.float64(inverse[0, 0]) * 100 + np.float64(inverse[0, 2]))
    assert ys[k, 0] == inverse[1, 2]


def test_device_warp_reproduces_the_host_warp():
  """Bottom-up inputs: equal bit for bit (measured: 0 of 4.6e7 values on 16 images at three
  input sizes). Top-down crops: at most 1e-4 of the values differ, each by one grey level
  (measured: 5e-6), where TF's XLA rounds a sample coordinate's multiply and add apart."""
  rng = np.random.default_rng(1)
  warp_fn = jax.jit(lambda im, s, i, xs, ys: warp.normalize(warp.warp(im, s, xs, ys, i)))
  images = [photo_like(rng, i) for i in range(4)]
  stack, sizes = warp.pad_images(images)
  for i, image in enumerate(images):
    for input_size, s, min_scale in ((128, 1.0, 1.0), (512, 1.0, 1.0), (256, 0.5, 0.5)):
      expected, center, scale = bottom_up.network_input(image, input_size, s, min_scale)
      size = expected.shape[1::-1]
      xs, ys = warp.sample_coordinates(warp.affine_matrices(center, scale, size), size)
      got = warp_fn(stack, sizes, np.array([i], np.int32), xs, ys)
      np.testing.assert_array_equal(got[0], expected)
  config = config_lib.topdown_config(width=4, image_size=(192, 256), sigma=2, batch_size=8,
                                     test_batch_size=8)
  predictor = predictors.TopDownPredictor(config, {})
  different = total = 0
  for image in images:
    h, w = image.shape[:2]
    boxes = np.stack([rng.uniform(-40, w, 6), rng.uniform(-40, h, 6), rng.uniform(4, w, 6),
                      rng.uniform(4, h, 6)], axis=1)
    crops, centers, scales = predictor.crops(image, boxes)
    for crop, center, scale in zip(crops, centers, scales):
      matrix = transforms.affine_matrix(center, scale, 0.0, (192, 256))
      expected = transforms.normalize(transforms.warp_image(image, matrix, (192, 256))).numpy()
      assert np.abs(crop - expected).max() <= GREY_LEVEL * 1.0001
      different += np.count_nonzero(crop != expected)
      total += crop.size
  assert different <= 1e-4 * total, different / total


def test_top_down_predictor_keypoints_match_host_crops():
  """The people of the device crops against the same network on the host's crops: keypoints
  within 0.05 px (a one-grey-level pixel here and there; measured: equal)."""
  config = config_lib.topdown_config(width=4, image_size=(64, 64), sigma=2, batch_size=8,
                                     test_batch_size=8)
  config.model = models.pose_hrnet_config(4, num_blocks=1, num_modules=(1, 1, 1))
  config.dataset.heatmap_size = (16, 16)
  predictor = predictors.TopDownPredictor(config, random_variables(config.model, seed=2))
  rng = np.random.default_rng(2)
  images = [photo_like(rng, i, (60, 160)) for i in range(3)]
  boxes = [None, [(5, 8, 40, 50), (20, 4, 30, 60)], np.zeros((0, 4))]
  found = predictor(images, boxes, box_scores=[None, [0.9, 0.5], None])
  assert [len(p) for p in found] == [1, 2, 0]
  for image, listed, people in zip(images, boxes, found):
    if listed is None:
      listed = [(0, 0, image.shape[1], image.shape[0])]
    for box, keypoints in zip(listed, people.keypoints):
      center, scale = coco.box_to_center_scale(box, 1.0, config.dataset.box_padding)
      crop = transforms.normalize(transforms.warp_image(
          image, transforms.affine_matrix(center, scale, 0.0, (64, 64)), (64, 64))).numpy()
      batch = {'image': np.repeat(crop[None], 8, 0), 'center': np.repeat(center[None], 8, 0),
               'scale': np.repeat(scale[None], 8, 0), 'score': np.ones(8, np.float32),
               'image_id': np.zeros(8, np.int32), 'mask': np.ones(8, np.float32)}
      out = predictor._predict(predictor.variables, sharding.global_batch(batch, predictor.mesh))
      expected = predictor._image_keypoints({k: np.asarray(v)[:1] for k, v in out.items()})
      np.testing.assert_allclose(keypoints, expected[0, :, :2], rtol=0, atol=0.05)


def test_batched_bottom_up_evaluation_is_the_one_image_path_on_4_devices(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.abspath(__file__), str(tmp_path)], capture_output=True,
      text=True, timeout=600,
      env=dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS='--xla_force_host_platform_device_count=4'))
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report['devices'] == 4 and report['people'] > 0, report
  assert len(report['groups']) >= 2 and max(report['groups']) > 4, report  # 2 calls of a size
  assert report['identical'] == report['images'], report


def one_image_people(config, variables, image, fns):
  """The bottom-up people of one image by the one-image path (host warp), as before."""
  test = config.test
  if tuple(test.scale_factors) == (1.0,):
    x, center, scale = bottom_up.network_input(image, config.dataset.input_size)
    det, nms_det, tags = fns['grouping'](variables, x[None], x.shape[:2])
    return bottom_up.group_people(det, tags, center, scale, test, nms_det)
  det, tags, center, scale = bottom_up.image_maps(config, variables, image, fns['maps'])
  return bottom_up.group_people(det.transpose(2, 0, 1), tags.transpose(2, 0, 1, 3), center,
                                scale, test)


def compare_on_devices(root):
  """BottomUpVal and the predictor against the one-image path; prints a JSON report.

  Nine val images of two or three input sizes (batches of 1 to 4, padded to 4 devices), one
  with a wrong annotated size, single-scale with flip test; the commonest size at scales
  (1.0, 0.5).
  """
  synthetic.write_dataset(root, num_train=1, num_val=9, seed=3, size_range=(60, 110),
                          max_people=3)
  annotation_file = coco.annotation_path(root, 'val')
  data = coco.read_json(annotation_file)
  data['images'][2]['height'] += 37  # a wrong size: the image is predicted alone
  coco.write_json(annotation_file, data)
  config = config_lib.bottomup_config(width=4, input_size=32, batch_size=2)
  config.model = models.higher_hrnet_config(4, 1, (1, 1, 1), deconv_blocks=1)
  config.dataset.root, config.dataset.val_split = root, 'val'
  # Random weights: every peak is a candidate; at most 5 per joint, all joined to the first
  # joint's people (a quick grouping, still with adjust and refine).
  config.test.detection_threshold = 0.0
  config.test.max_num_people = 5
  config.test.tag_threshold = 1e9
  variables = random_variables(config.model, seed=3)
  folder = coco.image_dir(root, 'val')
  entries = sorted(data['images'], key=lambda i: i['id'])
  images = [tasks.read_rgb(os.path.join(folder, i['file_name'])) for i in entries]
  report = {'devices': jax.device_count(), 'images': 0, 'identical': 0, 'people': 0}
  fns = {'grouping': bottom_up.make_grouping_inputs_fn(config),
         'maps': bottom_up.make_maps_fn(config)}
  expected = []
  for entry, image in zip(entries, images):
    keypoints, scores = one_image_people(config, variables, image, fns)
    cap = config.test.max_num_people  # BottomUpVal keeps the first max_num_people, as before
    expected += bottom_up.results_for_image(entry['id'], keypoints[:cap], scores[:cap])
  results = tasks.get_task(config).val_source(sharding.data_mesh()).predict(variables).results
  report['images'] += len(images)
  report['identical'] += len(images) * (results == expected)
  report['people'] += len(results)
  keys = [bottom_up.input_plan(*im.shape[:2], config).key for im in images]
  report['groups'] = sorted(keys.count(k) for k in set(keys))
  # Multi-scale: the images of the commonest size (two calls of it); no flip test (quicker).
  config.test.scale_factors = (1.0, 0.5)
  config.test.flip_test = False
  fns['maps'] = bottom_up.make_maps_fn(config)
  common = [im for im, k in zip(images, keys) if k == max(keys, key=keys.count)]
  found = predictors.BottomUpPredictor(config, variables)(common)
  for image, people in zip(common, found):
    keypoints, scores = one_image_people(config, variables, image, fns)
    report['images'] += 1
    report['identical'] += (np.array_equal(people.as_array(), keypoints) and
                            np.array_equal(people.scores, scores))
  print(json.dumps(report))


if __name__ == '__main__':
  compare_on_devices(sys.argv[1])
