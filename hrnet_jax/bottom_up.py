"""Bottom-up (HigherHRNet) inference as the official test: resize, flip test, grouping, COCO.

For one image at scale ``s`` (the official ``test.py`` with PROJECT2IMAGE):

1. the image is warped to a network input whose short side is ``input_size * s`` and whose
   long side is rounded up to a multiple of 64 (``multi_scale_size``);
2. the 1/4 heatmaps are upsampled (bilinear, half-pixel centres) to 1/2 and averaged with the
   1/2 heatmaps; with the flip test, the same on the mirrored input, flipped back with left and
   right swapped, averaged with the first; heatmaps and the 1/4 tags are upsampled to the
   input size of scale 1 (``project2image``); the tags of the image and of its mirror are
   stacked as two tag dimensions;
3. over several scales, heatmaps are averaged and only scale 1 gives tags, as officially;
4. ``grouping.parse`` groups joints into people, their coordinates go back to the image
   through the inverse of the warp, and a person's score is its mean joint score.

``input_plan`` and ``make_batch_fn`` run steps 1 to 3 for a batch of images whose inputs have
the same sizes, each device of a mesh on its own images: the warp (``hrnet_jax.warp``, equal bit
for bit to the host's TF warp), the network, flip test, projection and the max-pool NMS of the
grouping. ``network_input``, ``make_maps_fn``, ``make_grouping_inputs_fn`` and ``image_maps`` are
the one-image path on the host's warp, the reference the batched one is tested against.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from hrnet_jax import decode, errors, grouping, models, sharding, warp
from hrnet_jax import keypoints as kp
from hrnet_jax.evaluation import PERSON_CATEGORY
from input_pipeline import transforms

# The official test resizes so that both sides are multiples of 64.
SIZE_MULTIPLE = 64

MapsFn = Callable[[Any, np.ndarray, tuple[int, int]], tuple[jax.Array, jax.Array]]
# (variables, images, sizes, coordinates, key) -> det, nms_det, tags; see make_batch_fn.
BatchFn = Callable[..., tuple[jax.Array, jax.Array, jax.Array]]


def multi_scale_size(height: int, width: int, input_size: int, current_scale: float = 1.0,
                     min_scale: float = 1.0) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
  """The official ``get_multi_scale_size``: network input (w, h), center and scale (/200)."""
  def round_up(x: float) -> int:
    return int((x + SIZE_MULTIPLE - 1) // SIZE_MULTIPLE * SIZE_MULTIPLE)

  center = np.array([int(width / 2.0 + 0.5), int(height / 2.0 + 0.5)], np.float64)
  min_input_size = round_up(min_scale * input_size)
  if width < height:
    w_resized = int(min_input_size * current_scale / min_scale)
    h_resized = int(round_up(min_input_size / width * height) * current_scale / min_scale)
    scale_w = width / 200.0
    scale_h = h_resized / w_resized * width / 200.0
  else:
    h_resized = int(min_input_size * current_scale / min_scale)
    w_resized = int(round_up(min_input_size / height * width) * current_scale / min_scale)
    scale_h = height / 200.0
    scale_w = w_resized / h_resized * height / 200.0
  return (w_resized, h_resized), center, np.array([scale_w, scale_h], np.float64)


def network_input(image_rgb: np.ndarray, input_size: int, current_scale: float = 1.0,
                  min_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The official ``resize_align_multi_scale``, normalised: (h, w, 3) float32, center, scale."""
  height, width = image_rgb.shape[:2]
  size, center, scale = multi_scale_size(height, width, input_size, current_scale, min_scale)
  matrix = transforms.affine_matrix(center, scale, 0.0, size)
  image = transforms.normalize(transforms.warp_image(image_rgb, matrix, size)).numpy()
  return image, center, scale


def _resize(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize of NHWC as torch's interpolate(align_corners=False) when upsampling."""
  if x.shape[1:3] == (height, width):
    return x
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), method='linear')


def make_maps_fn(config: ml_collections.ConfigDict) -> MapsFn:
  """A jitted (variables, images (N, h, w, 3), (H, W)) -> heatmaps and tags, projected to (H, W).

  Heatmaps are (N, H, W, K), tags (N, H, W, K, L); L is 2 with the flip test, else 1.
  """
  return jax.jit(_maps(config), static_argnums=2)


def _maps(config: ml_collections.ConfigDict) -> MapsFn:
  """The function that ``make_maps_fn`` jits."""
  model = models.create_model(config.model)
  num_joints = config.model.num_joints
  flip_test = config.test.flip_test
  pairs = kp.from_config(config).flip_pairs if flip_test else ()
  perm = kp.flip_permutation(num_joints, pairs)

  def heatmaps_and_tags(variables, images):
    quarter, half = model.apply(variables, images, train=False)
    up = _resize(quarter[..., :num_joints], *half.shape[1:3])
    return (up + half) * 0.5, quarter[..., num_joints:]

  def maps(variables, images, size):
    heatmaps, tags = heatmaps_and_tags(variables, images)
    tags = [tags]
    if flip_test:
      flipped, flipped_tags = heatmaps_and_tags(variables, images[:, :, ::-1])
      heatmaps = decode.merge_flip_test(heatmaps, flipped, pairs, shift=False)
      tags.append(flipped_tags[:, :, ::-1][..., perm])
    heatmaps = _resize(heatmaps, *size)
    tags = jnp.stack([_resize(t, *size) for t in tags], axis=-1)
    return heatmaps, tags

  return maps


def _heatmap_nms(det: jax.Array, kernel: int) -> jax.Array:
  """``grouping.heatmap_nms`` of (..., H, W) maps on the device (equal bit for bit)."""
  pad = (kernel - 1) // 2
  window = (1,) * (det.ndim - 2) + (kernel, kernel)
  pooled = jax.lax.reduce_window(det, -jnp.inf, jax.lax.max, window, (1,) * det.ndim,
                                 ((0, 0),) * (det.ndim - 2) + ((pad, pad), (pad, pad)))
  return det * (pooled == det)


def make_grouping_inputs_fn(config: ml_collections.ConfigDict) -> Callable:
  """A jitted (variables, images (1, h, w, 3), (H, W)) -> what ``grouping.parse_joint_major``
  takes: det (K, H, W), its max-pool NMS, tags (K, H, W, L); the transposes and the NMS run on
  the device, which is most of the host's grouping time otherwise."""
  maps = _maps(config)
  kernel = config.test.nms_kernel

  def grouping_inputs(variables, images, size):
    heatmaps, tags = maps(variables, images, size)
    det = jnp.transpose(heatmaps[0], (2, 0, 1))
    return det, _heatmap_nms(det, kernel), jnp.transpose(tags[0], (2, 0, 1, 3))

  return jax.jit(grouping_inputs, static_argnums=2)


def scale_factors(config: ml_collections.ConfigDict) -> tuple[float, ...]:
  """``test.scale_factors``, largest first (the order heatmaps are summed in); 1.0 required."""
  scales = tuple(config.test.scale_factors)
  if 1.0 not in scales:
    raise errors.ConfigError(f'config.test.scale_factors must contain 1.0 (the tags come from '
                             f'scale 1, as officially); got {scales}')
  return tuple(sorted(scales, reverse=True))


@dataclasses.dataclass(frozen=True)
class InputPlan:
  """How one image goes through the network: its inputs over the test scales, on the host."""
  sizes: tuple[tuple[int, int], ...]  # network input (w, h) of each test scale, largest first
  projection: tuple[int, int]  # (w, h) the maps are projected to: the input at scale 1
  center: np.ndarray  # with ``scale``: projected pixels -> image pixels
  scale: np.ndarray
  coordinates: tuple[tuple[np.ndarray, np.ndarray], ...]  # per scale, warp.sample_coordinates

  @property
  def key(self) -> tuple:
    """Images with equal keys go through the network together (one compilation)."""
    return self.sizes, self.projection


def input_plan(height: int, width: int, config: ml_collections.ConfigDict) -> InputPlan:
  """The official inputs of an image of ``height`` x ``width`` at every test scale."""
  scales = scale_factors(config)
  input_size, min_scale = config.dataset.input_size, min(scales)
  projection, center, scale = multi_scale_size(height, width, input_size, 1.0, min_scale)
  sizes, coordinates = [], []
  for s in scales:
    size, c, s_scale = multi_scale_size(height, width, input_size, s, min_scale)
    xs, ys = warp.sample_coordinates(warp.affine_matrices(c, s_scale, size), size)
    sizes.append(size)
    coordinates.append((xs[0], ys[0]))
  return InputPlan(tuple(sizes), projection, center, scale, tuple(coordinates))


def make_batch_fn(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> BatchFn:
  """A jitted (variables, images, sizes, coordinates, key) -> det, nms_det, tags of a batch.

  images (N, H, W, 3) uint8 zero-padded with their (N, 2) (height, width) ``sizes``;
  ``coordinates`` per scale (xs (N, w), ys (N, h)) and the static ``key`` of their
  ``InputPlan`` (equal for the whole batch). N splits over the mesh's data axis; each device
  warps its images, runs the network with flip test and projection over the test scales, then
  the NMS: det and nms_det (N, K, H, W) and tags (N, K, H, W, L), ``grouping.parse_joint_major``'s
  layout. Each device runs the one-image path's computation on its images (equal bit for bit
  on CPU devices: tests/test_eval_devices.py).
  """
  maps = _maps(config)
  scales = scale_factors(config)
  kernel = config.test.nms_kernel
  batch = P(sharding.DATA_AXIS)

  def per_device(key, variables, images, sizes, coordinates):
    _, (proj_w, proj_h) = key
    total, tags = None, None
    for s, (xs, ys) in zip(scales, coordinates):
      x = warp.normalize(warp.warp(images, sizes, xs, ys))
      heatmaps, scale_tags = maps(variables, x, (proj_h, proj_w))
      total = heatmaps if total is None else total + heatmaps
      if s == 1.0:
        tags = scale_tags
    if len(scales) > 1:
      total = total / len(scales)
    det = jnp.transpose(total, (0, 3, 1, 2))
    return det, _heatmap_nms(det, kernel), jnp.transpose(tags, (0, 3, 1, 2, 4))

  def batch_fn(variables, images, sizes, coordinates, key):
    return jax.shard_map(lambda *args: per_device(key, *args), mesh=mesh,
                         in_specs=(P(), batch, batch, batch), out_specs=batch)(
                             variables, images, sizes, coordinates)

  return jax.jit(batch_fn, static_argnums=4)


def image_maps(config: ml_collections.ConfigDict, variables: Any, image_rgb: np.ndarray,
               maps_fn: MapsFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Heatmaps (H, W, K) and tags (H, W, K, L) of one image over ``test.scale_factors``.

  Returns them with the center and scale that map their pixels back to the image.
  """
  d = config.dataset
  scales = scale_factors(config)
  min_scale = min(scales)
  (w, h), center, scale = multi_scale_size(*image_rgb.shape[:2], d.input_size, 1.0, min_scale)
  total, tags = 0.0, None
  for s in scales:
    image, _, _ = network_input(image_rgb, d.input_size, s, min_scale)
    heatmaps, scale_tags = maps_fn(variables, image[None], (h, w))
    total = total + heatmaps[0]
    if s == 1.0:
      tags = scale_tags[0]
  return np.asarray(total / len(scales)), np.asarray(tags), center, scale


def group_people(det: np.ndarray, tags: np.ndarray, center: np.ndarray, scale: np.ndarray,
                 test: ml_collections.ConfigDict, nms_det: np.ndarray | None = None,
                 order: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """People (P, K, 3: image x, y, score) and their scores, from maps at the input size.

  det (K, H, W) and tags (K, H, W, L) are in the official joint-major layout; ``order`` is the
  keypoint set's grouping order (``grouping.joint_order`` if None); ``nms_det`` is det's
  max-pool NMS when a device computed it.
  """
  people, scores = grouping.parse_joint_major(
      np.asarray(det, np.float32), np.asarray(tags, np.float32),
      nms_det=None if nms_det is None else np.asarray(nms_det, np.float32),
      max_num_people=test.max_num_people, detection_threshold=test.detection_threshold,
      tag_threshold=test.tag_threshold, use_detection_val=test.use_detection_val,
      ignore_too_much=test.ignore_too_much, nms_kernel=test.nms_kernel, adjust=test.adjust,
      refine=test.refine, order=order)
  height, width = det.shape[1:]
  num_people, num_joints = people.shape[:2]
  xy = decode.to_image_coordinates(people[None, :, :, :2].reshape(1, -1, 2), center[None],
                                   scale[None], (width, height))
  keypoints = np.concatenate([xy.reshape(num_people, num_joints, 2),
                              people[..., 2:3].astype(np.float64)], axis=-1)
  return keypoints, np.asarray(scores, np.float64)


def results_for_image(image_id: int, keypoints: np.ndarray, scores: np.ndarray,
                      category_id: int = PERSON_CATEGORY) -> list[dict]:
  """COCO keypoint results of one image's people (no NMS, as the official evaluate)."""
  return [{'image_id': int(image_id), 'category_id': category_id,
           'keypoints': [float(v) for v in person.reshape(-1)], 'score': float(score)}
          for person, score in zip(keypoints, scores)]
