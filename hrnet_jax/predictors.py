"""Predictors: the people of whole images, in image pixels, for both model kinds.

One interface: ``predictor(images, boxes=None) -> list[People]``, images RGB uint8 (H, W, 3).
A top-down predictor crops each box (the eval pipeline's warp), runs the network, flip test
and decoding as one jitted step over the mesh in fixed-size batches (one compilation), and
rescores each person as the official test. A bottom-up predictor runs the official
HigherHRNet test on each whole image; its inputs are sized to multiples of 64, a bounded set
of shapes. Evaluation, ``launch/demo.py`` and user code call the same predictors.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hrnet_jax import bottom_up, decode, errors, evaluation, models, sharding
from hrnet_jax import keypoints as kp
from input_pipeline import coco, transforms


@dataclasses.dataclass(frozen=True)
class People:
  """The people found in one image."""
  keypoints: np.ndarray  # (P, K, 2) float64 image x, y
  joint_scores: np.ndarray  # (P, K)
  scores: np.ndarray  # (P,) the person score of the official test
  boxes: np.ndarray  # (P, 4) x, y, width, height in image pixels

  def __len__(self) -> int:
    return len(self.scores)

  def as_array(self) -> np.ndarray:
    """(P, K, 3): x, y and score of each joint, the layout of COCO results."""
    return np.concatenate([self.keypoints, self.joint_scores[..., None]], axis=-1)


def keypoint_boxes(keypoints: np.ndarray, joint_scores: np.ndarray) -> np.ndarray:
  """(P, 4) x, y, w, h around each person's joints scored above 0 (all joints if none)."""
  boxes = np.zeros((len(keypoints), 4), np.float64)
  for i, (xy, score) in enumerate(zip(keypoints, joint_scores)):
    xy = xy[score > 0] if np.any(score > 0) else xy
    low, high = xy.min(axis=0), xy.max(axis=0)
    boxes[i] = (*low, *(high - low))
  return boxes


class Predictor(abc.ABC):
  """People from whole RGB images: the interface of both model kinds."""
  takes_boxes: bool  # whether people are found in given person boxes (top-down)

  def __init__(self, config: ml_collections.ConfigDict, variables: Any):
    self.config = config
    self.set_variables(variables)

  def set_variables(self, variables: Any) -> None:
    """Predicts with ``variables`` ({'params', 'batch_stats'}) from now on."""
    self.variables = variables

  def model_input(self, image_rgb: np.ndarray) -> np.ndarray:
    """The image in the channel order the model was trained on (``dataset.color_rgb``)."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
      raise errors.UserError(f'expected an RGB image of shape (H, W, 3); got {image_rgb.shape}')
    return image_rgb if self.config.dataset.color_rgb else image_rgb[..., ::-1]

  @abc.abstractmethod
  def __call__(self, images: Sequence[np.ndarray],
               boxes: Sequence[Any] | None = None,
               box_scores: Sequence[Any] | None = None) -> list[People]:
    """The people of each image; ``boxes`` (x, y, w, h) per image for top-down models."""


def make_crop_predict_fn(config: ml_collections.ConfigDict,
                         mesh: jax.sharding.Mesh) -> Callable[[Any, dict], dict]:
  """A jitted (variables, global batch of crops) -> heatmap coordinates and maxvals.

  The batch's other keys (center, scale, ...) come back with them; the outputs are
  replicated, so every process can read all of them. With the DARK decoder the merged
  heatmaps come back too (DARK runs on the host, as its authors' code).
  """
  model = models.create_model(config.model)
  test = config.test
  decode.check_decoder(test.decoder)
  pairs = kp.skeleton_for(config.model.num_joints)['flip_pairs'] if test.flip_test else ()

  def predict(variables, batch):
    heatmaps = model.apply(variables, batch['image'], train=False).astype(jnp.float32)
    if test.flip_test:
      flipped = model.apply(variables, batch['image'][:, :, ::-1], train=False)
      heatmaps = decode.merge_flip_test(heatmaps, flipped.astype(jnp.float32), pairs,
                                        shift=test.shift_heatmap)
    coords, maxvals = decode.heatmap_coordinates(
        heatmaps, test.post_process and test.decoder == 'official')
    out = {k: v for k, v in batch.items() if k != 'image'}
    out.update(coords=coords, maxvals=maxvals)
    if test.decoder == 'dark':
      out['heatmaps'] = heatmaps
    return out

  return jax.jit(predict, in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=sharding.replicated(mesh))


CROP_BATCH_KEYS = ('image', 'center', 'scale', 'score', 'image_id', 'mask')


def _as_int32(ids: np.ndarray) -> np.ndarray:
  if ids.size and (ids.max() > np.iinfo(np.int32).max or ids.min() < 0):
    raise errors.UserError(f'image ids must lie in [0, 2^31) to travel through the devices; '
                           f'got {ids.min()} .. {ids.max()}')
  return ids.astype(np.int32)


class TopDownPredictor(Predictor):
  """HRNet on person boxes: crops in fixed-size jitted batches over the mesh."""
  takes_boxes = True

  def __init__(self, config: ml_collections.ConfigDict, variables: Any,
               mesh: jax.sharding.Mesh | None = None):
    super().__init__(config, variables)
    self.mesh = mesh or sharding.data_mesh()
    self.batch_size = config.test.batch_size
    sharding.check_batch_size(self.batch_size)
    self._predict = make_crop_predict_fn(config, self.mesh)
    width, height = config.dataset.image_size
    self.aspect_ratio = width / height

  def crop_keypoints(self, local_batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Image-pixel keypoints (n, K, 3: x, y, maxval) of this process's share of a crop batch.

    ``local_batch`` holds ``CROP_BATCH_KEYS`` (the eval pipeline's batches); rows with mask 0
    (padding) are dropped. Returns keypoints with the rows' center, scale, score, image_id.
    """
    local = dict({k: local_batch[k] for k in CROP_BATCH_KEYS},
                 image_id=_as_int32(np.asarray(local_batch['image_id'])))
    out = self._predict(self.variables, sharding.global_batch(local, self.mesh))
    out = jax.tree.map(np.asarray, out)
    keep = out['mask'] > 0
    result = {k: out[k][keep] for k in ('center', 'scale', 'score', 'image_id')}
    result['keypoints'] = self._image_keypoints(out)[keep]
    return result

  def _image_keypoints(self, out: dict[str, np.ndarray]) -> np.ndarray:
    """(N, K, 3) image x, y (float64) and maxval of a crop-predict output (DARK here)."""
    coords = out['coords']
    if self.config.test.decoder == 'dark':
      coords = decode.dark_coordinates(out['heatmaps'], coords)
    xy = decode.to_image_coordinates(coords, out['center'], out['scale'],
                                     self.config.dataset.heatmap_size)
    return np.concatenate([xy, out['maxvals'][..., None].astype(np.float64)], axis=-1)

  def crops(self, image: np.ndarray, boxes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised network inputs of each box (x, y, w, h), with their centers and scales."""
    size = self.config.dataset.image_size
    images, centers, scales = [], [], []
    for box in boxes:
      center, scale = coco.box_to_center_scale(box, self.aspect_ratio,
                                               self.config.dataset.box_padding)
      matrix = transforms.affine_matrix(center, scale, 0.0, size)
      images.append(transforms.normalize(transforms.warp_image(image, matrix, size)).numpy())
      centers.append(center)
      scales.append(scale)
    w, h = size
    return (np.stack(images) if images else np.zeros((0, h, w, 3), np.float32),
            np.array(centers, np.float32).reshape(-1, 2),
            np.array(scales, np.float32).reshape(-1, 2))

  def _keypoints(self, images: np.ndarray, centers: np.ndarray,
                 scales: np.ndarray) -> np.ndarray:
    """(M, K, 3) image x, y and maxval of M crops, in padded batches of ``batch_size``."""
    out = []
    for start in range(0, len(images), self.batch_size):
      n = min(self.batch_size, len(images) - start)
      pad = self.batch_size - n

      def padded(x):
        x = x[start:start + n]
        return np.concatenate([x, np.repeat(x[:1], pad, axis=0)]) if pad else x

      batch = {'image': padded(images), 'center': padded(centers), 'scale': padded(scales),
               'score': np.ones(self.batch_size, np.float32),
               'image_id': np.zeros(self.batch_size, np.int32),
               'mask': np.ones(self.batch_size, np.float32)}
      result = self._predict(self.variables, sharding.global_batch(batch, self.mesh))
      out.append(self._image_keypoints({k: np.asarray(v)[:n] for k, v in result.items()}))
    return np.concatenate(out) if out else np.zeros((0, self.config.model.num_joints, 3))

  def __call__(self, images: Sequence[np.ndarray],
               boxes: Sequence[Any] | None = None,
               box_scores: Sequence[Any] | None = None) -> list[People]:
    """The people in each image's boxes (None for an image: the whole image is one box).

    The crops of all images go through the network together; a person's score is the
    official one: its box score (default 1) x the mean of its joint scores above
    ``test.in_vis_thre``.
    """
    if boxes is None:
      boxes = [None] * len(images)
    if len(boxes) != len(images):
      raise errors.UserError(f'got {len(boxes)} box lists for {len(images)} images')
    crops, centers, scales, image_boxes, image_scores = [], [], [], [], []
    for i, (image, listed) in enumerate(zip(images, boxes)):
      image = self.model_input(np.asarray(image))
      listed = (np.array([[0.0, 0.0, image.shape[1], image.shape[0]]]) if listed is None
                else np.asarray(listed, np.float64).reshape(-1, 4))
      given = None if box_scores is None else box_scores[i]
      image_scores.append(np.ones(len(listed)) if given is None
                          else np.asarray(given, np.float64).reshape(-1))
      image_boxes.append(listed)
      x, c, s = self.crops(image, listed)
      crops.append(x)
      centers.append(c)
      scales.append(s)
    keypoints = self._keypoints(np.concatenate(crops), np.concatenate(centers),
                                np.concatenate(scales))
    people, first = [], 0
    for listed, scores in zip(image_boxes, image_scores):
      found = keypoints[first:first + len(listed)]
      first += len(listed)
      people.append(People(
          keypoints=found[..., :2], joint_scores=found[..., 2],
          scores=evaluation.rescore(scores, found[..., 2], self.config.test.in_vis_thre),
          boxes=listed))
    return people


class BottomUpPredictor(Predictor):
  """HigherHRNet on whole images: network on one device, grouping on the host."""
  takes_boxes = False

  def __init__(self, config: ml_collections.ConfigDict, variables: Any,
               mesh: jax.sharding.Mesh | None = None):
    del mesh  # one image at a time, on one local device
    super().__init__(config, variables)
    self.single_scale = tuple(config.test.scale_factors) == (1.0,)
    if self.single_scale:
      self.grouping_inputs_fn = bottom_up.make_grouping_inputs_fn(config)
    else:
      self.maps_fn = bottom_up.make_maps_fn(config)

  def set_variables(self, variables: Any) -> None:
    """Uses ``variables`` from now on, copied to one local device if replicated over many."""
    self.variables = jax.tree.map(
        lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, variables)

  def people(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, K, 3) image x, y, score of every person found in one image, and (P,) scores."""
    image = self.model_input(np.asarray(image_rgb))
    test = self.config.test
    if self.single_scale:
      x, center, scale = bottom_up.network_input(image, self.config.dataset.input_size)
      det, nms_det, tags = self.grouping_inputs_fn(self.variables, x[None], x.shape[:2])
      return bottom_up.group_people(det, tags, center, scale, test, nms_det)
    det, tags, center, scale = bottom_up.image_maps(self.config, self.variables, image,
                                                    self.maps_fn)
    return bottom_up.group_people(det.transpose(2, 0, 1), tags.transpose(2, 0, 1, 3), center,
                                  scale, test)

  def __call__(self, images: Sequence[np.ndarray],
               boxes: Sequence[Any] | None = None,
               box_scores: Sequence[Any] | None = None) -> list[People]:
    """Every person of each whole image, as the official test (no boxes, no NMS)."""
    if boxes is not None and any(b is not None for b in boxes):
      raise errors.UserError('a bottom-up model finds every person of the whole image itself: '
                             'pass no boxes')
    del box_scores
    people = []
    for image in images:
      found, scores = self.people(image)
      people.append(People(keypoints=found[..., :2], joint_scores=found[..., 2],
                           scores=scores, boxes=keypoint_boxes(found[..., :2], found[..., 2])))
    return people
