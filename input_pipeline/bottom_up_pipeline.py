"""tf.data pipeline for bottom-up (HigherHRNet) training: whole images, every person at once.

As the official ``CocoKeypoints`` with ``RandomAffineTransform`` and ``RandomHorizontalFlip``:
an image is warped to a square ``input_size`` crop around its centre, shifted by up to
``max_translate x scale`` pixels, zoomed so that its short side is 0.75-1.5 crops, rotated by
up to 30 degrees, then flipped with probability 0.5 (joints to ``size - x - 1`` with left and
right swapped, as officially). For each output (1/4 and 1/2 of the input) it gives
multi-person Gaussian heatmaps, a mask that is 0 on crowd regions, on people without labelled
keypoints and outside the image (the COCO segmentations, through pycocotools, warped as the
official ``cv2.warpAffine``), and, at 1/4, the joint locations of the tag loss.

Sampling is the top-down pipeline's: a pure function of (seed, global step), each process
reading its rows only (``pipeline.sample_positions``), images in place of person instances.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from pycocotools import mask as mask_utils
import tensorflow as tf

from hrnet_jax import keypoints as kp
from input_pipeline import bottom_up_targets, pipeline, transforms
from input_pipeline.coco import PeopleImages

AUTOTUNE = tf.data.AUTOTUNE
# The batch entries of one training step, as the bottom-up train step reads them.
BATCH_KEYS = ('image', 'heatmaps_quarter', 'heatmaps_half', 'mask_quarter', 'mask_half',
              'tag_locations')


@dataclasses.dataclass(frozen=True)
class BottomUpSpec:
  """What the bottom-up transforms need from a config."""
  input_size: int
  num_joints: int
  flip_pairs: tuple[tuple[int, int], ...]
  sigma: float = 2.0
  max_num_people: int = 30
  min_scale: float = 0.75
  max_scale: float = 1.5
  max_rotation: float = 30.0
  max_translate: float = 40.0
  flip_prob: float = 0.5

  @property
  def output_sizes(self) -> tuple[int, int]:
    """The sides of the 1/4 and 1/2 outputs."""
    return self.input_size // 4, self.input_size // 2


def augment_params(height, width, seed, spec: BottomUpSpec):
  """The official random draws, in order: scale, rotation, translation, flip.

  Returns the crop centre (image pixels), its side in units of 200 pixels, the rotation in
  degrees and whether to flip (float64 tensors and a bool).
  """
  u = tf.random.stateless_uniform([5], seed=seed, dtype=tf.float64, alg='philox')
  height, width = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
  scale = tf.minimum(height, width) / kp.PIXEL_STD  # the short side ('short' scale type)
  scale *= spec.min_scale + u[0] * (spec.max_scale - spec.min_scale)
  rotation = (u[1] * 2.0 - 1.0) * spec.max_rotation
  # np.random.randint(-t, t): an integer in [-t, t), t = max_translate x scale, truncated.
  limit = tf.math.floor(spec.max_translate * scale)
  shift = tf.math.floor(-limit + u[2:4] * 2.0 * limit)
  center = tf.stack([width / 2.0, height / 2.0]) + shift
  return center, scale, rotation, u[4] < spec.flip_prob


def ignore_mask(segmentations: list, height: int, width: int) -> np.ndarray:
  """The official ``get_mask``: (height, width) bool, False on the ignored regions."""
  total = np.zeros((height, width), np.float64)
  for segmentation in segmentations:
    if isinstance(segmentation, dict) and isinstance(segmentation.get('counts'), str):
      rles = dict(segmentation, counts=segmentation['counts'].encode())  # compressed RLE
    else:  # polygons, or COCO's uncompressed crowd RLE
      rles = mask_utils.frPyObjects(segmentation, height, width)
    decoded = mask_utils.decode(rles)
    total += decoded.sum(axis=2) if decoded.ndim == 3 else decoded
  return total < 0.5


def warp_mask(mask: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
  """The official mask warp: cv2.warpAffine of mask x 255 (uint8, zero border), > 0.5."""
  warped = cv2.warpAffine((mask * 255).astype(np.uint8), np.asarray(matrix, np.float64),
                          (size, size)) / 255
  return (warped > 0.5).astype(np.float32)


def transform_joints(joints: np.ndarray, matrix: np.ndarray, size: int, flip: bool,
                     flip_perm: np.ndarray) -> np.ndarray:
  """Joints (P, K, 3) in image pixels to an output of side ``size``, then the official flip."""
  out = np.array(joints, np.float64, copy=True)
  out[..., :2] = out[..., :2] @ matrix[:, :2].T + matrix[:, 2]
  if flip:
    out = out[:, flip_perm]
    out[..., 0] = size - out[..., 0] - 1
  return out


def sample_targets(joints: np.ndarray, keep: np.ndarray, matrices, flip: bool,
                   spec: BottomUpSpec) -> dict[str, np.ndarray]:
  """Heatmaps and masks at 1/4 and 1/2 and the 1/4 tag locations of one sample (numpy).

  ``joints`` (P, K, 3) and ``keep`` (the ``ignore_mask``) are in image pixels; ``matrices``
  map the image to the 1/4 and the 1/2 output.
  """
  perm = kp.flip_permutation(spec.num_joints, spec.flip_pairs)
  out = {}
  for name, size, matrix in zip(('quarter', 'half'), spec.output_sizes, matrices):
    mask = warp_mask(keep, matrix, size)
    out_joints = transform_joints(joints, matrix, size, flip, perm)
    if flip:
      mask = mask[:, ::-1]
    out[f'heatmaps_{name}'] = bottom_up_targets.multi_person_heatmaps(
        out_joints, size, size, spec.sigma)
    out[f'mask_{name}'] = np.ascontiguousarray(mask)
    if name == 'quarter':
      out['tag_locations'] = bottom_up_targets.tag_locations(out_joints, size, size,
                                                             spec.max_num_people)
  return out


def _targets_fn(images: PeopleImages, spec: BottomUpSpec):
  """A numpy function of (image index, matrices, flip) for ``tf.numpy_function``."""

  def targets(index, matrix_quarter, matrix_half, flip):
    index = int(index)
    height, width = (int(v) for v in images.sizes[index])
    keep = ignore_mask(images.ignore[index], height, width)
    out = sample_targets(images.joints[index], keep, (matrix_quarter, matrix_half),
                         bool(flip), spec)
    return tuple(out[k] for k in BATCH_KEYS[1:])

  return targets


def training_sample(contents, index, height, width, seed, spec: BottomUpSpec,
                    targets_fn) -> dict[str, tf.Tensor]:
  """One augmented crop (0..255) and its targets, from the stateless ``seed`` (2 int64)."""
  center, scale, rotation, flip = augment_params(height, width, seed, spec)
  scale2 = tf.stack([scale, scale])
  size = spec.input_size
  image = transforms.warp_encoded(contents, transforms.affine_matrix(center, scale2, rotation,
                                                                     (size, size)), (size, size))
  image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
  matrices = [transforms.affine_matrix(center, scale2, rotation, (s, s))
              for s in spec.output_sizes]
  outputs = tf.numpy_function(targets_fn, [index, *matrices, flip],
                              [tf.float32, tf.float32, tf.float32, tf.float32, tf.int32],
                              stateful=False)
  quarter, half = spec.output_sizes
  k = spec.num_joints
  shapes = ([quarter, quarter, k], [half, half, k], [quarter, quarter], [half, half],
            [spec.max_num_people, k, 2])
  sample = {'image': image}
  for key, value, shape in zip(BATCH_KEYS[1:], outputs, shapes):
    sample[key] = tf.ensure_shape(value, shape)
  return sample


def train_dataset(images: PeopleImages, spec: BottomUpSpec, global_batch: int, *, seed: int,
                  start_step: int = 0, process_index: int = 0, process_count: int = 1,
                  skip_bad_images: bool = False) -> tf.data.Dataset:
  """Batches of this process's share: ``BATCH_KEYS`` (image normalised), position, index."""
  paths = tf.constant(images.image_paths.astype(str))
  sizes = tf.constant(images.sizes, tf.int64)
  ids = tf.constant(images.image_ids, tf.int64)
  targets_fn = _targets_fn(images, spec)
  local = global_batch // process_count  # pipeline.sample_positions checks that it divides

  def make_sample(position, index):
    size = tf.gather(sizes, index)
    sample = training_sample(tf.io.read_file(tf.gather(paths, index)), index, size[0], size[1],
                             tf.stack([tf.constant(seed, tf.int64), position]), spec,
                             targets_fn)
    return dict(sample, position=position, index=index, image_id=tf.gather(ids, index))

  ds = pipeline.sample_positions(len(images), global_batch, seed=seed, start_step=start_step,
                                 process_index=process_index, process_count=process_count)
  ds = ds.map(make_sample, num_parallel_calls=AUTOTUNE, deterministic=True)
  if skip_bad_images:
    ds = ds.ignore_errors()
  return pipeline.batch_and_normalize(ds, local)
