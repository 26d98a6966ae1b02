r"""Throughput of the evaluation after the network: flip merge + decode, rescoring + OKS NMS,
COCOeval, at COCO val2017 scale on synthetic data.

python benchmarks/eval_throughput.py --mode=gt          # ~6,400 ground-truth people
python benchmarks/eval_throughput.py --mode=detections  # 100,000 detected boxes

A COCO-format annotation file of 5,000 images is written into a temporary folder (no images
are needed after the network). Heatmaps (64x48, 17 joints) are Gaussians at the true joints
with noise, plus their flipped twins; boxes of the detection mode are jittered copies of the
true ones and random background boxes. Prints instances/s of each stage and of the whole.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax import decode, evaluation
from hrnet_jax import keypoints as kp

_MODE = flags.DEFINE_enum('mode', 'gt', ['gt', 'detections'], 'Which boxes to evaluate.')
_IMAGES = flags.DEFINE_integer('images', 5000, 'Images (COCO val2017: 5,000).')
_PEOPLE = flags.DEFINE_integer('people', 6400, 'Ground-truth people with keypoints.')
_DETECTIONS = flags.DEFINE_integer('detections', 100_000, 'Boxes in --mode=detections.')
_BATCH = flags.DEFINE_integer('batch_size', 256, 'Heatmaps decoded per jitted call.')

HEATMAP_SIZE = (48, 64)  # (w, h) of the W32 256x192 recipe
ASPECT = HEATMAP_SIZE[0] / HEATMAP_SIZE[1]


def synthetic_ground_truth(rng: np.random.Generator, num_images: int, num_people: int):
  """COCO annotations: boxes of 40-400 px in 640x480 images, 17 keypoints inside each."""
  image_ids = rng.integers(1, num_images + 1, num_people)
  wh = rng.uniform(40, 400, (num_people, 1)) * np.array([ASPECT, 1.0])
  xy = rng.uniform(0, 1, (num_people, 2)) * (np.array([640, 480]) - wh)
  joints = xy[:, None] + rng.uniform(0.1, 0.9, (num_people, 17, 2)) * wh[:, None]
  visible = rng.random((num_people, 17)) > 0.25
  annotations = []
  for i in range(num_people):
    keypoints = np.concatenate([joints[i], 2.0 * visible[i][:, None]], -1) * visible[i][:, None]
    annotations.append({'id': i + 1, 'image_id': int(image_ids[i]), 'category_id': 1,
                        'iscrowd': 0, 'bbox': [*map(float, xy[i]), *map(float, wh[i])],
                        'area': float(wh[i].prod() * 0.55), 'num_keypoints': int(visible[i].sum()),
                        'keypoints': [float(v) for v in keypoints.reshape(-1)]})
  dataset = {'images': [{'id': i, 'file_name': f'{i:012d}.jpg', 'width': 640, 'height': 480}
                        for i in range(1, num_images + 1)],
             'annotations': annotations,
             'categories': [{'id': 1, 'name': 'person', 'keypoints': list(kp.COCO_KEYPOINT_NAMES),
                             'skeleton': [[a + 1, b + 1] for a, b in kp.COCO_SKELETON]}]}
  return dataset, image_ids, xy, wh, joints


def center_scale(xy, wh):
  """The official box -> (center, scale) with padding 1.25 at the recipe's aspect ratio."""
  center = xy + wh / 2
  w = np.maximum(wh[:, 0], wh[:, 1] * ASPECT)
  return center, np.stack([w, w / ASPECT], -1) / kp.PIXEL_STD * 1.25


@jax.jit
def render(xy, noise_key):
  """Gaussian heatmaps (N, H, W, 17) at heatmap coordinates xy (N, 17, 2), plus noise."""
  w, h = HEATMAP_SIZE
  ys, xs = jnp.mgrid[0:h, 0:w]
  d2 = (xs[None, :, :, None] - xy[:, None, None, :, 0])**2 + (
      ys[None, :, :, None] - xy[:, None, None, :, 1])**2
  return jnp.exp(-d2 / 8.0) + 0.05 * jax.random.uniform(noise_key, d2.shape)


@jax.jit
def merge_and_decode(heatmaps, flipped):
  """The device part of the eval step after the network: flip merge, argmax, quarter offset."""
  merged = decode.merge_flip_test(heatmaps, flipped, kp.COCO_FLIP_PAIRS)
  return decode.heatmap_coordinates(merged)


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  dataset, image_ids, xy, wh, joints = synthetic_ground_truth(rng, _IMAGES.value, _PEOPLE.value)
  if _MODE.value == 'detections':
    n = _DETECTIONS.value
    source = rng.integers(0, len(xy), n)
    jitter = rng.normal(0, 0.05, (n, 2)) * wh[source]
    box_xy, box_wh = xy[source] + jitter, wh[source] * rng.uniform(0.9, 1.1, (n, 1))
    box_joints = joints[source] + jitter[:, None]
    box_ids, box_scores = image_ids[source], rng.uniform(0.3, 1.0, n)
  else:
    box_xy, box_wh, box_joints, box_ids, box_scores = xy, wh, joints, image_ids, np.ones(len(xy))
  centers, scales = center_scale(box_xy, box_wh)
  zoom = scales[:, 0] * kp.PIXEL_STD / HEATMAP_SIZE[0]
  hm_xy = (box_joints - centers[:, None]) / zoom[:, None, None] + np.array(HEATMAP_SIZE) / 2
  hm_xy = hm_xy + rng.normal(0, 0.7, hm_xy.shape)
  flip_xy = hm_xy[:, kp.flip_permutation(17, kp.COCO_FLIP_PAIRS)] * np.array([-1, 1]) + np.array(
      [HEATMAP_SIZE[0] - 1, 0])
  n, batch = len(centers), _BATCH.value
  print(f'{_MODE.value}: {n} boxes on {_IMAGES.value} images, {len(xy)} ground-truth people; '
        f'{jax.device_count()} {jax.devices()[0].platform} device(s)')

  # Heatmaps are rendered batch by batch outside the timed region (they come from the
  # network in eval.py); only the merge, decode and map to pixels are timed.
  key = jax.random.key(0)
  device_seconds, coords, maxvals = 0.0, [], []
  for start in range(-batch, n, batch):  # the first pass compiles and is not kept
    first = max(start, 0)
    stop = min(first + batch, n)
    pad = batch - (stop - first)
    k1, k2, key = jax.random.split(key, 3)
    heatmaps = render(np.pad(hm_xy[first:stop], ((0, pad), (0, 0), (0, 0))), k1)
    flipped = render(np.pad(flip_xy[first:stop], ((0, pad), (0, 0), (0, 0))), k2)
    jax.block_until_ready((heatmaps, flipped))
    t = time.perf_counter()
    c, m = merge_and_decode(heatmaps, flipped)
    c, m = np.asarray(c)[:stop - first], np.asarray(m)[:stop - first]
    if start >= 0:
      device_seconds += time.perf_counter() - t
      coords.append(c)
      maxvals.append(m)
  t0 = time.perf_counter()
  coords, maxvals = np.concatenate(coords), np.concatenate(maxvals)
  image_xy = decode.to_image_coordinates(coords, centers, scales, HEATMAP_SIZE)
  keypoints = np.concatenate([image_xy, maxvals[..., None].astype(np.float64)], -1)
  t1 = time.perf_counter()
  results = evaluation.keypoint_results(keypoints, box_scores, box_ids, centers, scales)
  t2 = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    annotation_file = os.path.join(tmp, 'person_keypoints_val.json')
    with open(annotation_file, 'w') as f:
      json.dump(dataset, f)
    t3 = time.perf_counter()
    metrics, _ = evaluation.coco_keypoint_eval(annotation_file, results)
    t4 = time.perf_counter()

  def line(name, seconds):
    print(f'  {name:<36s} {seconds:7.2f} s  {n / seconds:10.0f} instances/s')

  line('flip merge + decode (jit) + pixels', device_seconds + t1 - t0)
  line('rescoring + OKS NMS per image', t2 - t1)
  line('COCOeval (load, evaluate, summarize)', t4 - t3)
  line('all of the above', device_seconds + (t1 - t0) + (t2 - t1) + (t4 - t3))
  print(f'  {len(results)} people kept by OKS NMS; AP {metrics["AP"]:.3f} '
        f'(noisy synthetic heatmaps)')


if __name__ == '__main__':
  app.run(main)
