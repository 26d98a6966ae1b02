"""tf.data pipelines for top-down training and evaluation.

Training is a pure function of (seed, global step): global sample position p = step x B + i
holds instance perm_e[p mod N] of epoch e = p // N (a seeded permutation per epoch), and its
augmentation draws come from the stateless seed (seed, p). A pipeline started at step s yields
batches s, s+1, ... of an uninterrupted run without reading the earlier ones, and process k of
P reads only rows [k B/P, (k+1) B/P) of every global batch.
"""

from __future__ import annotations

import atexit
import dataclasses
import re
from typing import Iterator, Sequence
import weakref

import numpy as np
import tensorflow as tf

from hrnet_jax import errors
from input_pipeline import transforms
from input_pipeline.coco import Instances

AUTOTUNE = tf.data.AUTOTUNE


class DataError(errors.UserError):
  """An image could not be read or decoded; the message names the file."""


@dataclasses.dataclass(frozen=True)
class SampleSpec:
  """What the top-down transforms need from a config."""
  image_size: tuple[int, int]  # (width, height)
  heatmap_size: tuple[int, int]
  sigma: float
  flip_pairs: tuple[tuple[int, int], ...]
  upper_body_ids: tuple[int, ...]
  scale_factor: float = 0.35
  rotation_factor: float = 45.0
  rotation_prob: float = 0.6
  flip_prob: float = 0.5
  half_body_prob: float = 0.3
  num_joints_half_body: int = 8
  joint_weights: tuple[float, ...] = ()  # per-joint loss weights; () = all 1
  # config.dataset.udp: training crops by UDP's warp and UDP targets (mmpose's UDP recipes);
  # read by training_sample (the warp) and finish_training_batch (the targets) alike.
  udp: bool = False
  # config.test.decoder == 'udp': eval crops by UDP's warp, as the UDP decoder maps back.
  eval_udp: bool = False

  @property
  def aspect_ratio(self) -> float:
    return self.image_size[0] / self.image_size[1]


def augment_params(keypoints, center, scale, seed, spec: SampleSpec):
  """The official random draws, in order: half body, scale, rotation, flip."""
  u = tf.random.stateless_uniform([4], seed=seed, dtype=tf.float64, alg='philox')
  n = tf.random.stateless_normal([3], seed=seed + tf.constant([0, 1 << 40], tf.int64),
                                 dtype=tf.float64, alg='philox')
  center, scale = tf.cast(center, tf.float64), tf.cast(scale, tf.float64)
  num_visible = tf.reduce_sum(tf.cast(keypoints[:, 2] > 0, tf.int32))
  hb_center, hb_scale, ok = transforms.half_body_center_scale(
      keypoints, spec.upper_body_ids, spec.aspect_ratio, n[0])
  use_half = (num_visible > spec.num_joints_half_body) & (u[0] < spec.half_body_prob) & ok
  center = tf.where(use_half, hb_center, center)
  scale = tf.where(use_half, hb_scale, scale)
  sf, rf = spec.scale_factor, spec.rotation_factor
  scale = scale * tf.clip_by_value(n[1] * sf + 1.0, 1.0 - sf, 1.0 + sf)
  rotation = tf.where(u[1] <= spec.rotation_prob, tf.clip_by_value(n[2] * rf, -2 * rf, 2 * rf),
                      tf.constant(0.0, tf.float64))
  flip = (u[2] <= spec.flip_prob) & (spec.flip_prob > 0)  # official: random() <= 0.5
  return center, scale, rotation, flip


def _epoch_permutation(seed: int, epoch: tf.Tensor, n: int) -> tf.Tensor:
  keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.cast(seed, tf.int64), epoch]),
                                     minval=None, maxval=None, dtype=tf.int64, alg='philox')
  return tf.argsort(keys, stable=True)


def share(global_batch: int, process_index: int, process_count: int) -> tuple[int, int]:
  """This process's rows of a global batch: (local batch size, offset of its first row)."""
  if global_batch % process_count:
    raise errors.UserError(f'global batch {global_batch} does not split over {process_count} '
                           f'processes; use a multiple of {process_count}')
  local = global_batch // process_count
  return local, process_index * local


def sample_positions(num_instances: int, global_batch: int, *, seed: int, start_step: int,
                     process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """(position, instance index) pairs of this process's rows, from ``start_step`` on, forever."""
  if num_instances <= 0:
    raise errors.UserError('the dataset is empty: no person instances (top-down) or images with '
                           'people (bottom-up) to sample')
  local, offset = share(global_batch, process_index, process_count)
  n, b = num_instances, global_batch
  first = start_step * b
  start_epoch = first // n

  def epoch_rows(epoch):
    positions = tf.range(tf.maximum(epoch * n, first), (epoch + 1) * n, dtype=tf.int64)
    row = positions % b
    positions = tf.boolean_mask(positions, (row >= offset) & (row < offset + local))
    index = tf.gather(_epoch_permutation(seed, epoch, n), positions - epoch * n)
    return tf.data.Dataset.from_tensor_slices((positions, tf.cast(index, tf.int64)))

  return tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch_rows)


def _instance_tensors(instances: Instances) -> dict[str, tf.Tensor]:
  return {'path': tf.constant(instances.image_paths.astype(str)),
          'center': tf.constant(instances.centers, tf.float64),
          'scale': tf.constant(instances.scales, tf.float64),
          'keypoints': tf.constant(instances.keypoints, tf.float64),
          'image_id': tf.constant(instances.image_ids, tf.int64)}


def training_sample(contents, keypoints, center, scale, seed, spec: SampleSpec):
  """Random draws from ``seed`` (2 int64), then the decode and warp of one encoded image
  (a JPEG: only the window the warp reads).

  Returns the warped image (0..255) and the transformed keypoints (float64); targets and
  normalisation follow once per batch (``finish_training_batch``).
  """
  center, scale, rotation, flip = augment_params(keypoints, center, scale, seed, spec)
  sample = transforms.encoded_warp_and_target(
      contents, keypoints, center, scale, rotation, flip, image_size=spec.image_size,
      heatmap_size=spec.heatmap_size, sigma=spec.sigma, flip_pairs=spec.flip_pairs,
      with_targets=False, udp=spec.udp)
  return sample['image'], sample['keypoints']


def finish_training_batch(spec: SampleSpec):
  """A batch map: heatmaps and target weights from ``keypoints``, the image normalised."""

  @tf.function(jit_compile=True)  # fused by XLA: 5x faster than the TF kernels on a CPU
  def targets_and_normalize(image, keypoints):
    heatmaps, weight = transforms.heatmap_targets(
        keypoints, image_size=spec.image_size, heatmap_size=spec.heatmap_size,
        sigma=spec.sigma, udp=spec.udp)
    if spec.joint_weights:  # the official USE_DIFFERENT_JOINTS_WEIGHT
      weight = weight * tf.constant(spec.joint_weights, weight.dtype)
    return transforms.normalize(image), heatmaps, weight[..., None]

  def finish(batch):
    image, heatmaps, weight = targets_and_normalize(batch['image'], batch.pop('keypoints'))
    return dict(batch, image=image, heatmaps=heatmaps, target_weight=weight)

  return finish


def train_dataset(instances: Instances, spec: SampleSpec, global_batch: int, *, seed: int,
                  start_step: int = 0, process_index: int = 0, process_count: int = 1,
                  skip_bad_images: bool = False) -> tf.data.Dataset:
  """Batches of this process's share: image (normalised), heatmaps, target_weight, position."""
  table = _instance_tensors(instances)
  local, _ = share(global_batch, process_index, process_count)

  def make_sample(position, index):
    image, keypoints = training_sample(
        tf.io.read_file(tf.gather(table['path'], index)), tf.gather(table['keypoints'], index),
        tf.gather(table['center'], index), tf.gather(table['scale'], index),
        tf.stack([tf.constant(seed, tf.int64), position]), spec)
    return {'image': image, 'keypoints': keypoints, 'position': position, 'index': index,
            'image_id': tf.gather(table['image_id'], index)}

  ds = sample_positions(len(instances), global_batch, seed=seed, start_step=start_step,
                        process_index=process_index, process_count=process_count)
  ds = ds.map(make_sample, num_parallel_calls=AUTOTUNE, deterministic=True)
  if skip_bad_images:
    ds = ds.ignore_errors()
  ds = ds.batch(local, drop_remainder=True)
  return ds.map(finish_training_batch(spec), num_parallel_calls=AUTOTUNE,
                deterministic=True).prefetch(AUTOTUNE)


def eval_dataset(instances: Instances, spec: SampleSpec, global_batch: int, *,
                 process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Every instance once, warped without augmentation; the last batch padded and masked.

  Batches carry image (normalised), center, scale, score, image_id, area, index and mask
  (1 for real rows). Flip test flips ``image`` along width on the device, as the official
  code flips the warped input.
  """
  local, offset = share(global_batch, process_index, process_count)
  n = len(instances)
  padded = -(-n // global_batch) * global_batch if n else 0
  rows = np.arange(padded)
  mine = rows[(rows % global_batch >= offset) & (rows % global_batch < offset + local)]
  table = _instance_tensors(instances)
  extras = {'score': tf.constant(instances.scores, tf.float32),
            'image_id': table['image_id'],
            'area': tf.constant(instances.areas, tf.float32)}

  def make_sample(row):
    index = tf.minimum(row, n - 1)
    center, scale = tf.gather(table['center'], index), tf.gather(table['scale'], index)
    image = eval_sample(tf.io.read_file(tf.gather(table['path'], index)), center, scale, spec)
    out = {'image': image, 'center': tf.cast(center, tf.float32),
           'scale': tf.cast(scale, tf.float32), 'index': index,
           'mask': tf.cast(row < n, tf.float32)}
    out.update({k: tf.gather(v, index) for k, v in extras.items()})
    return out

  ds = tf.data.Dataset.from_tensor_slices(tf.constant(mine, tf.int64))
  ds = ds.map(make_sample, num_parallel_calls=AUTOTUNE, deterministic=True)
  return batch_and_normalize(ds, local)


def eval_sample(contents, center, scale, spec: SampleSpec) -> tf.Tensor:
  """The warped box of one encoded image, without augmentation (0..255); UDP's warp with
  ``spec.eval_udp``."""
  matrix = transforms.crop_matrix(center, scale, 0.0, spec.image_size, spec.eval_udp)
  return transforms.warp_encoded(contents, matrix, spec.image_size)


def batch_and_normalize(ds: tf.data.Dataset, local_batch: int) -> tf.data.Dataset:
  """Batches samples (dropping a partial last batch) and normalises their images once per
  batch (XLA)."""
  normalize = tf.function(transforms.normalize, jit_compile=True)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.map(lambda batch: dict(batch, image=normalize(batch['image'])),
                num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)


def _reason(error: Exception) -> str:
  """The first line of a read or decode error's message, without TF's op and function names."""
  message = error.message if isinstance(error, tf.errors.OpError) else str(error)
  line = next((line for line in message.splitlines() if line.strip()), type(error).__name__)
  return re.sub(r'\{\{function_node [^}]*\}\}\s*|\s*\[Op:.*$', '', line)


def read_rgb(path: str) -> np.ndarray:
  """An image file (any format cv2 reads) as uint8 (H, W, 3) RGB, the pixels the pipelines
  use, or a DataError naming the file."""
  try:
    return transforms.decode(tf.io.read_file(path)).numpy()
  except (tf.errors.OpError, ValueError) as e:
    raise DataError(f'{path}: cannot read or decode the image ({_reason(e)})') from None


def find_bad_images(paths: Sequence[str]) -> list[tuple[str, str]]:
  """(path, reason) for each file that cannot be read or decoded as an image."""
  bad = []
  for path in dict.fromkeys(str(p) for p in paths):
    try:
      transforms.decode(tf.io.read_file(path))
    except (tf.errors.OpError, ValueError) as e:
      bad.append((path, _reason(e)))
  return bad


def _close_at_exit(ref: weakref.ref) -> None:
  iterator = ref()
  if iterator is not None:
    iterator.close()


class TrainIterator:
  """numpy batches of ``train_dataset`` with the global step, and clear errors on bad files.

  On a decode or read failure it finds the offending files of that step (the stream is a
  pure function of the step, so they are known) and raises ``DataError`` naming them. With
  ``skip_bad_images`` the bad samples are dropped and counted in ``skipped``.
  ``make_dataset`` is ``train_dataset`` or another with its signature over rows that have
  ``image_paths`` (``bottom_up_pipeline.train_dataset`` over whole images).
  """

  def __init__(self, instances: Instances, spec: SampleSpec, global_batch: int, *, seed: int,
               start_step: int = 0, process_index: int = 0, process_count: int = 1,
               skip_bad_images: bool = False, make_dataset=None):
    self.instances, self.global_batch, self.seed = instances, global_batch, seed
    self.step, self.skip_bad_images, self.skipped = start_step, skip_bad_images, 0
    self._process = (process_index, process_count)
    self._start_position, self._delivered = start_step * global_batch, 0
    self._iterator = iter((make_dataset or train_dataset)(
        instances, spec, global_batch, seed=seed, start_step=start_step,
        process_index=process_index, process_count=process_count,
        skip_bad_images=skip_bad_images).as_numpy_iterator())
    # A tf.data iterator still alive at interpreter exit can deadlock it when its map calls
    # back into Python (the bottom-up targets do): drop it before the interpreter shuts down.
    atexit.register(_close_at_exit, weakref.ref(self))

  def close(self) -> None:
    """Releases the tf.data iterator and its threads; the iterator yields no more batches."""
    self._iterator = iter(())

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    try:
      batch = next(self._iterator)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
            tf.errors.DataLossError) as e:
      raise self._diagnose(e) from None
    self._delivered += len(batch['position'])
    if self.skip_bad_images:
      self.skipped = self._share_positions_through(int(batch['position'][-1])) - self._delivered
    self.step += 1
    return batch

  def _share_positions_through(self, last: int) -> int:
    """How many of this process's positions lie in [start, last]."""
    local, offset = share(self.global_batch, *self._process)
    def upto(p):  # positions q in [0, p) with q % B in [offset, offset + local)
      full, rest = divmod(p, self.global_batch)
      return full * local + min(max(rest - offset, 0), local)
    return upto(last + 1) - upto(self._start_position)

  def step_indices(self, step: int) -> np.ndarray:
    """The instance indices of this process's rows of ``step``."""
    ds = sample_positions(len(self.instances), self.global_batch, seed=self.seed,
                          start_step=step, process_index=self._process[0],
                          process_count=self._process[1])
    local = self.global_batch // self._process[1]
    return np.array([int(i) for _, i in ds.take(local).as_numpy_iterator()])

  def _diagnose(self, error: Exception) -> Exception:
    paths = self.instances.image_paths[self.step_indices(self.step)]
    bad = find_bad_images(paths)
    if not bad:
      return DataError(f'the input pipeline failed at step {self.step}: {error}')
    listing = '; '.join(f'{p}: {reason}' for p, reason in bad)
    return DataError(f'unreadable image(s) at step {self.step}: {listing} (set '
                     f'config.dataset.skip_bad_images=True to skip and count them)')
