r"""Training-input throughput: our tf.data pipeline against the official per-sample loop.

python benchmarks/input_pipeline.py [--num_images=200] [--threads=1]

Both make W32 256x192 training samples (JPEG decode, half body, scale, rotation, flip,
affine warp, normalisation, Gaussian targets) from the same synthetic COCO-format JPEGs at
COCO's size (480-640 px). The official-style loop is ``JointsDataset.__getitem__`` in
numpy/cv2 (tests/official_reference.py), one sample at a time; tf.data runs its graph on
``--threads`` cores. The process is pinned to that many cores (sched_setaffinity), so the
two figures compare per core. Then whole-image decodes per second of the same files: the
pipelines' decode (``transforms.decode``: cv2's IDCT), TF's default IDCT and cv2 itself.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time

from absl import app, flags
import cv2
import numpy as np
import tensorflow as tf

_HERE = os.path.dirname(os.path.abspath(__file__))
# This file's name would shadow the input_pipeline package: drop its folder from the path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _HERE]
sys.path.insert(0, os.path.join(_HERE, '..', 'tests'))
import official_reference as official  # noqa: E402  (the official loader, transcribed)

from hrnet_jax import config_lib, tasks  # noqa: E402
from input_pipeline import coco, pipeline, synthetic, transforms  # noqa: E402

_NUM_IMAGES = flags.DEFINE_integer('num_images', 200, 'Synthetic JPEGs to read.')
_SAMPLES = flags.DEFINE_integer('samples', 1024, 'Training samples timed per loader.')
_THREADS = flags.DEFINE_integer('threads', 1, 'Cores for both loaders.')
_DATA = flags.DEFINE_string('data', None, 'Existing COCO-format folder (default: synthetic).')


def official_sample(instances, index, spec, rng):
  """One sample the way the official JointsDataset.__getitem__ makes it (train mode)."""
  image = cv2.imread(instances.image_paths[index], cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
  image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
  keypoints = instances.keypoints[index]
  joints = np.concatenate([keypoints[:, :2], np.zeros((17, 1))], axis=1)
  vis = np.repeat(np.minimum(keypoints[:, 2:], 1), 3, axis=1)
  vis[:, 2] = 0
  c, s = instances.centers[index].copy(), instances.scales[index].copy()
  if np.sum(vis[:, 0]) > spec.num_joints_half_body and rng.random() < spec.half_body_prob:
    hc, hs = official.half_body_transform(joints, vis, spec.upper_body_ids, spec.aspect_ratio,
                                          np.random.randn())
    if hc is not None:
      c, s = hc, hs
  sf, rf = spec.scale_factor, spec.rotation_factor
  s = s * np.clip(np.random.randn() * sf + 1, 1 - sf, 1 + sf)
  r = np.clip(np.random.randn() * rf, -rf * 2, rf * 2) if random.random() <= 0.6 else 0
  flip = random.random() <= 0.5
  _, warped, _, _, target, weight = official.train_sample(
      image, joints, vis, c, s, r, flip, spec.image_size, spec.heatmap_size, spec.sigma,
      spec.flip_pairs)
  normalised = (warped / 255.0 - transforms.IMAGENET_MEAN) / transforms.IMAGENET_STD
  return normalised.astype(np.float32), target, weight


def main(argv: list[str]) -> None:
  del argv
  threads = _THREADS.value
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])  # whole process, XLA too
  cv2.setNumThreads(threads)
  config = config_lib.topdown_config(width=32, image_size=(192, 256), sigma=2, batch_size=32,
                                     test_batch_size=32)
  spec = tasks.sample_spec(config)
  root = _DATA.value
  if root is None:
    root = tempfile.mkdtemp(prefix='hrnet_bench_')
    synthetic.write_dataset(root, _NUM_IMAGES.value, 1, size_range=(480, 640))
  instances = coco.load_ground_truth(root, 'train2017' if _DATA.value else 'train',
                                     aspect_ratio=spec.aspect_ratio)
  n = _SAMPLES.value
  print(f'{len(instances)} person instances in {root}; {n} samples per loader, '
        f'{threads} core(s) each')

  rng = random.Random(0)
  np.random.seed(0)
  random.seed(0)
  official_sample(instances, 0, spec, rng)
  start = time.perf_counter()
  for i in range(n):
    official_sample(instances, i % len(instances), spec, rng)
  official_rate = n / (time.perf_counter() - start)

  ds = pipeline.train_dataset(instances, spec, 32, seed=0)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  ds = ds.with_options(options)
  it = iter(ds)
  for _ in range(8):  # build the graph, compile the XLA kernels (once per size bucket)
    next(it)
  start = time.perf_counter()
  for _ in range(n // 32):
    next(it)
  ours_rate = (n // 32) * 32 / (time.perf_counter() - start)
  print(f'official-style numpy/cv2 loop: {official_rate:7.1f} instances/s '
        f'({official_rate / threads:.1f} per core)')
  print(f'tf.data pipeline:              {ours_rate:7.1f} instances/s '
        f'({ours_rate / threads:.1f} per core)')
  paths = sorted(set(instances.image_paths))
  for what, rate in decode_rates(paths, threads).items():
    print(f'whole-image decode, {what}: {rate:7.1f} images/s')


def decode_rates(paths: list[str], threads: int, repeats: int = 4) -> dict[str, float]:
  """Whole-image decodes per second of the files at ``paths``: the pipelines' decode (cv2's
  IDCT) and TF's default IDCT (tf.data on ``threads`` cores), and the official cv2.imread."""
  contents = [open(path, 'rb').read() for path in paths] * repeats
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads

  def tf_rate(decode):
    ds = tf.data.Dataset.from_tensor_slices(contents).with_options(options)
    ds = ds.map(lambda c: tf.shape(decode(c)), num_parallel_calls=tf.data.AUTOTUNE)
    for _ in ds.take(8):  # build the graph
      pass
    start = time.perf_counter()
    for _ in ds:
      pass
    return len(contents) / (time.perf_counter() - start)

  rates = {'transforms.decode': tf_rate(transforms.decode),
           "tf.io.decode_jpeg (TF's default IDCT)": tf_rate(
               lambda c: tf.io.decode_jpeg(c, channels=3))}
  start = time.perf_counter()
  for data in contents:
    image = cv2.imdecode(np.frombuffer(data, np.uint8),
                         cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
  rates['cv2.imdecode (official flags) + RGB'] = len(contents) / (time.perf_counter() - start)
  return rates


if __name__ == '__main__':
  app.run(main)
