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
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hrnet_jax import decode, errors, grouping, models
from hrnet_jax import keypoints as kp
from hrnet_jax.evaluation import PERSON_CATEGORY
from input_pipeline import transforms

# The official test resizes so that both sides are multiples of 64.
SIZE_MULTIPLE = 64

MapsFn = Callable[[Any, np.ndarray, tuple[int, int]], tuple[jax.Array, jax.Array]]


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
  pairs = kp.skeleton_for(num_joints)['flip_pairs'] if flip_test else ()
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


def make_grouping_inputs_fn(config: ml_collections.ConfigDict) -> Callable:
  """A jitted (variables, images (1, h, w, 3), (H, W)) -> what ``grouping.parse_joint_major``
  takes: det (K, H, W), its max-pool NMS, tags (K, H, W, L); the transposes and the NMS run on
  the device, which is most of the host's grouping time otherwise."""
  maps = _maps(config)
  kernel = config.test.nms_kernel

  def grouping_inputs(variables, images, size):
    heatmaps, tags = maps(variables, images, size)
    det = jnp.transpose(heatmaps[0], (2, 0, 1))
    pad = (kernel - 1) // 2
    pooled = jax.lax.reduce_window(det, -jnp.inf, jax.lax.max, (1, kernel, kernel), (1, 1, 1),
                                   ((0, 0), (pad, pad), (pad, pad)))
    return det, det * (pooled == det), jnp.transpose(tags[0], (2, 0, 1, 3))

  return jax.jit(grouping_inputs, static_argnums=2)


def image_maps(config: ml_collections.ConfigDict, variables: Any, image_rgb: np.ndarray,
               maps_fn: MapsFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Heatmaps (H, W, K) and tags (H, W, K, L) of one image over ``test.scale_factors``.

  Returns them with the center and scale that map their pixels back to the image.
  """
  d, test = config.dataset, config.test
  scales = tuple(test.scale_factors)
  if 1.0 not in scales:
    raise errors.ConfigError(f'config.test.scale_factors must contain 1.0 (the tags come from '
                             f'scale 1, as officially); got {scales}')
  min_scale = min(scales)
  (w, h), center, scale = multi_scale_size(*image_rgb.shape[:2], d.input_size, 1.0, min_scale)
  total, tags = 0.0, None
  for s in sorted(scales, reverse=True):
    image, _, _ = network_input(image_rgb, d.input_size, s, min_scale)
    heatmaps, scale_tags = maps_fn(variables, image[None], (h, w))
    total = total + heatmaps[0]
    if s == 1.0:
      tags = scale_tags[0]
  return np.asarray(total / len(scales)), np.asarray(tags), center, scale


def group_people(det: np.ndarray, tags: np.ndarray, center: np.ndarray, scale: np.ndarray,
                 test: ml_collections.ConfigDict,
                 nms_det: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """People (P, K, 3: image x, y, score) and their scores, from maps at the input size.

  det (K, H, W) and tags (K, H, W, L) are in the official joint-major layout; ``nms_det`` is
  det's max-pool NMS when a device computed it.
  """
  people, scores = grouping.parse_joint_major(
      np.asarray(det, np.float32), np.asarray(tags, np.float32),
      nms_det=None if nms_det is None else np.asarray(nms_det, np.float32),
      max_num_people=test.max_num_people, detection_threshold=test.detection_threshold,
      tag_threshold=test.tag_threshold, use_detection_val=test.use_detection_val,
      ignore_too_much=test.ignore_too_much, nms_kernel=test.nms_kernel, adjust=test.adjust,
      refine=test.refine)
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
