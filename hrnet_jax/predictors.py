"""Predictors: the people of whole images, in image pixels, for both model kinds.

One interface: ``predictor(images, boxes=None) -> list[People]``, images RGB uint8 (H, W, 3).
A top-down predictor crops each box on a device (the eval pipeline's warp, ``hrnet_jax.warp``),
runs the network, flip test and decoding as one jitted step over the devices in fixed-size
batches (one compilation), and rescores each person as the official test. A bottom-up predictor
runs the official HigherHRNet test on whole images: images whose inputs have the same size go
through the warp, network, flip test, projection and NMS together, split over the devices (the
sizes are multiples of 64, a bounded set of shapes), and are grouped into people on the host.
Evaluation, ``launch/demo.py`` and user code call the same predictors.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from hrnet_jax import bottom_up, decode, errors, evaluation, models, sharding, warp
from hrnet_jax import keypoints as kp
from input_pipeline import coco


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
    self.keypoint_set = kp.from_config(config)  # the joints: names, skeleton, flips
    self.set_variables(variables)

  def set_variables(self, variables: Any) -> None:
    """Predicts with ``variables`` ({'params', 'batch_stats'}) from now on."""
    self.variables = variables

  def model_input(self, image_rgb: np.ndarray) -> np.ndarray:
    """``image_rgb`` as the model reads it: uint8 (H, W, 3) RGB, the channel order of training."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
      raise errors.UserError(f'expected an RGB image of shape (H, W, 3); got {image_rgb.shape}')
    if image_rgb.dtype != np.uint8:
      if not (np.all(image_rgb == np.round(image_rgb)) and image_rgb.min(initial=0) >= 0 and
              image_rgb.max(initial=0) <= 255):
        raise errors.UserError(f'expected an RGB image of whole grey levels 0..255 (uint8); '
                               f'got {image_rgb.dtype} values')
      image_rgb = image_rgb.astype(np.uint8)
    return image_rgb

  @abc.abstractmethod
  def heatmaps(self, image_rgb: np.ndarray, boxes: Any = None
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The network's heatmaps of one image, for viewing: (maps (h, w, K), the (2, 3) matrix
    from image pixels to them) per box (top-down) or one for the whole image (bottom-up)."""

  @abc.abstractmethod
  def __call__(self, images: Sequence[np.ndarray],
               boxes: Sequence[Any] | None = None,
               box_scores: Sequence[Any] | None = None) -> list[People]:
    """The people of each image; ``boxes`` (x, y, w, h) per image for top-down models."""


def make_crop_predict_fn(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                         network: Callable[[jax.Array], jax.Array] | None = None
                         ) -> Callable[[Any, dict], dict]:
  """A jitted (variables, global batch of crops) -> heatmap coordinates and maxvals
  (``decode.crop_outputs_function``), of the model with ``variables`` or of ``network``.

  The batch's other keys (center, scale, ...) come back with them; the outputs are
  replicated, so every process can read all of them.
  """
  model = models.create_model(config.model)
  outputs = decode.crop_outputs_function(config)

  def predict(variables, batch):
    out = {k: v for k, v in batch.items() if k != 'image'}
    out.update(outputs(network or (lambda x: model.apply(variables, x, train=False)),
                       batch['image']))
    return out

  return jax.jit(predict, in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=sharding.replicated(mesh))


CROP_BATCH_KEYS = ('image', 'center', 'scale', 'score', 'index', 'mask')


def _fits_int32(ids: np.ndarray) -> bool:
  return not ids.size or (ids.min() >= 0 and ids.max() <= np.iinfo(np.int32).max)


def local_mesh(mesh: jax.sharding.Mesh) -> jax.sharding.Mesh:
  """The devices of ``mesh`` that this process drives, as a data mesh (``mesh`` on one process).

  Prediction of a process's own images runs there, with no collective across processes.
  """
  local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  if len(local) == mesh.devices.size:
    return mesh
  return jax.sharding.Mesh(np.asarray(local), (sharding.DATA_AXIS,))


def replicated_on(variables: Any, mesh: jax.sharding.Mesh) -> Any:
  """``variables`` on every device of the process-local ``mesh`` (from host arrays or from
  arrays replicated over a bigger mesh)."""
  def put(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = x.addressable_data(0)
    return jax.device_put(x, sharding.replicated(mesh))
  return jax.tree.map(put, variables)


@jax.jit
def _warp_crops(images: jax.Array, sizes: jax.Array, index: jax.Array, xs: jax.Array,
                ys: jax.Array) -> jax.Array:
  """Normalised crops (N, h, w, 3): crop n samples ``images[index[n]]`` at xs[n], ys[n]."""
  return warp.normalize(warp.warp(images, sizes, xs, ys, index))


class TopDownPredictor(Predictor):
  """HRNet on person boxes: crops in fixed-size jitted batches over the mesh.

  Called on images, it warps the crops of all boxes on a device (``hrnet_jax.warp``, as the
  eval pipeline's warp), ``batch_size`` at a time, and sends each batch over this process's
  devices; ``crop_keypoints`` takes the eval pipeline's crops over the whole mesh. A
  ``network`` (images -> heatmaps, callable in jit) replaces the model in those calls: the
  ONNX Runtime backend (``tasks.Task.predictor``); the flip test and decoding stay.
  """
  takes_boxes = True

  def __init__(self, config: ml_collections.ConfigDict, variables: Any,
               mesh: jax.sharding.Mesh | None = None,
               network: Callable[[jax.Array], jax.Array] | None = None):
    self.network = network
    self.mesh = mesh or sharding.data_mesh()
    self.local_mesh = local_mesh(self.mesh)
    super().__init__(config, variables)
    self.batch_size = config.test.batch_size
    sharding.check_batch_size(self.batch_size)
    self._predict = make_crop_predict_fn(config, self.mesh)
    self._local_predict = (
        make_crop_predict_fn(config, self.local_mesh, network) if network is not None
        else self._predict if self.local_mesh is self.mesh
        else make_crop_predict_fn(config, self.local_mesh))
    width, height = config.dataset.image_size
    self.aspect_ratio = width / height

  def set_variables(self, variables: Any) -> None:
    """Predicts with ``variables`` ({'params', 'batch_stats'}) from now on."""
    self.variables = variables
    self._local_variables = None  # placed on this process's devices when first called
    self._maps_fn = None  # the network alone, for ``heatmaps``: compiled when first called

  def crop_keypoints(self, local_batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Image-pixel keypoints (n, K, 3: x, y, maxval) of this process's share of a crop batch.

    ``local_batch`` holds ``CROP_BATCH_KEYS`` (the eval pipeline's batches); rows with mask 0
    (padding) are dropped. Returns keypoints with the rows' center, score, scale, index (the
    row of the split's boxes) and image_id where every id of the batch fits in int32 (others
    are looked up by index on the host).
    """
    local = {k: np.asarray(local_batch[k]) for k in CROP_BATCH_KEYS}
    local['index'] = local['index'].astype(np.int32)
    ids = np.asarray(local_batch.get('image_id', np.zeros(0, np.int64)))
    if len(ids) and _fits_int32(ids):
      local['image_id'] = ids.astype(np.int32)
    out = self._predict(self.variables, sharding.global_batch(local, self.mesh))
    out = jax.tree.map(np.asarray, out)
    keep = out['mask'] > 0
    result = {k: out[k][keep] for k in ('center', 'scale', 'score', 'index', 'image_id')
              if k in out}
    result['keypoints'] = self._image_keypoints(out)[keep]
    return result

  def _image_keypoints(self, out: dict[str, np.ndarray]) -> np.ndarray:
    """(N, K, 3) image x, y (float64) and maxval of a crop-predict output (DARK, UDP here)."""
    test = self.config.test
    xy = decode.image_coordinates(out['coords'], out['maxvals'], out['center'], out['scale'],
                                  self.config.dataset.heatmap_size, test.decoder,
                                  out.get('heatmaps'), test.blur_kernel)
    return np.concatenate([xy, out['maxvals'][..., None].astype(np.float64)], axis=-1)

  def _centers_scales(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 (M, 2) centers and scales of (M, 4) boxes (x, y, w, h), as the eval pipeline."""
    pairs = [coco.box_to_center_scale(box, self.aspect_ratio, self.config.dataset.box_padding)
             for box in boxes]
    return (np.array([c for c, _ in pairs], np.float32).reshape(-1, 2),
            np.array([s for _, s in pairs], np.float32).reshape(-1, 2))

  def _crop_inputs(self, images: Sequence[np.ndarray], centers: np.ndarray,
                   scales: np.ndarray) -> tuple[jax.Array, np.ndarray, np.ndarray, np.ndarray]:
    """The images stacked on a device (their count padded to a power of two, sides to
    ``warp.PAD_MULTIPLE``) with their sizes, and where each crop samples them (xs, ys)."""
    count = 1 << (len(images) - 1).bit_length()
    stack, sizes = warp.pad_images(images, count)
    size = self.config.dataset.image_size
    xs, ys = warp.sample_coordinates(self._matrices(centers, scales, size), size)
    return jax.device_put(stack, self.local_mesh.devices.flat[0]), sizes, xs, ys

  def _matrices(self, centers: np.ndarray, scales: np.ndarray, size) -> np.ndarray:
    """Image -> ``size`` matrices of crops; UDP decoding reads crops of UDP's warp, as
    mmpose's TopdownAffine(use_udp=True)."""
    return (warp.udp_affine_matrices if self.config.test.decoder == 'udp'
            else warp.affine_matrices)(centers, scales, size)

  def heatmaps(self, image_rgb: np.ndarray, boxes: Any = None
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The network's heatmaps of each box (x, y, w, h; None: the whole image), no flip test,
    with the matrix from image pixels to them."""
    image = self.model_input(np.asarray(image_rgb))
    boxes = ([[0.0, 0.0, image.shape[1], image.shape[0]]] if boxes is None else boxes)
    crops, centers, scales = self.crops(image, boxes)
    if not len(crops):
      return []
    if self._maps_fn is None:
      model = models.create_model(self.config.model)
      self._maps_fn = jax.jit(lambda variables, x: model.apply(variables, x, train=False))
    maps = np.asarray(self._maps_fn(self.variables, crops), np.float32)
    return list(zip(maps, self._matrices(centers, scales, self.config.dataset.heatmap_size)))

  def crops(self, image: np.ndarray, boxes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised network inputs of each box (x, y, w, h) of a uint8 image, with their centers
    and scales (float32): the eval pipeline's crops, warped on a device."""
    centers, scales = self._centers_scales(np.asarray(boxes, np.float64).reshape(-1, 4))
    if not len(centers):
      w, h = self.config.dataset.image_size
      return np.zeros((0, h, w, 3), np.float32), centers, scales
    stack, sizes, xs, ys = self._crop_inputs([image], centers, scales)
    crops = _warp_crops(stack, sizes, np.zeros(len(centers), np.int32), xs, ys)
    return np.asarray(crops), centers, scales

  def _bucket(self, crops: int) -> int:
    """The batch that ``crops`` crops are padded to: the smallest power of two times the local
    device count that holds them, at most ``batch_size`` (a few shapes, a compile each)."""
    devices = self.local_mesh.devices.size
    size = devices * (1 << max(0, -(-crops // devices) - 1).bit_length())
    return min(size, self.batch_size)

  def _keypoints(self, images: Sequence[np.ndarray], image_boxes: Sequence[np.ndarray]
                 ) -> np.ndarray:
    """(M, K, 3) image x, y and maxval of every box of every image, in batches of
    ``batch_size`` (the last one padded only to its ``_bucket``): each batch is warped on a
    device, then split over the local devices."""
    boxes = np.concatenate(image_boxes) if image_boxes else np.zeros((0, 4))
    if not len(boxes):
      return np.zeros((0, self.config.model.num_joints, 3))
    index = np.repeat(np.arange(len(images), dtype=np.int32), [len(b) for b in image_boxes])
    centers, scales = self._centers_scales(boxes)
    stack, sizes, xs, ys = self._crop_inputs(images, centers, scales)
    if self._local_variables is None:
      self._local_variables = replicated_on(self.variables, self.local_mesh)
    out = []
    for start in range(0, len(boxes), self.batch_size):
      n = min(self.batch_size, len(boxes) - start)
      size = self._bucket(n)
      rows = np.full(size, start)  # padding repeats the batch's first crop
      rows[:n] = np.arange(start, start + n)
      batch = {'image': _warp_crops(stack, sizes, index[rows], xs[rows], ys[rows]),
               'center': centers[rows], 'scale': scales[rows],
               'score': np.ones(size, np.float32),
               'index': np.zeros(size, np.int32),
               'mask': np.ones(size, np.float32)}
      batch = jax.device_put(batch, sharding.batch_sharded(self.local_mesh))
      result = self._local_predict(self._local_variables, batch)
      out.append(self._image_keypoints({k: np.asarray(v)[:n] for k, v in result.items()}))
    return np.concatenate(out)

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
    arrays, image_boxes, image_scores = [], [], []
    for i, (image, listed) in enumerate(zip(images, boxes)):
      image = self.model_input(np.asarray(image))
      listed = (np.array([[0.0, 0.0, image.shape[1], image.shape[0]]]) if listed is None
                else np.asarray(listed, np.float64).reshape(-1, 4))
      given = None if box_scores is None else box_scores[i]
      image_scores.append(np.ones(len(listed)) if given is None
                          else np.asarray(given, np.float64).reshape(-1))
      image_boxes.append(listed)
      arrays.append(image)
    keypoints = self._keypoints(arrays, image_boxes)
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
  """HigherHRNet on whole images: same-size inputs batched over this process's devices.

  Images whose official inputs have the same sizes (``bottom_up.InputPlan.key``) go through
  ``bottom_up.make_batch_fn`` together, ``images_per_device`` per local device in each call (the
  last call of a size padded to a multiple of the device count): the warp, network, flip test,
  projection and NMS run on the devices; grouping runs on the host, one image at a time, while
  the devices compute the next batch.
  """
  takes_boxes = False

  def __init__(self, config: ml_collections.ConfigDict, variables: Any,
               mesh: jax.sharding.Mesh | None = None, images_per_device: int = 1):
    self.mesh = local_mesh(mesh or sharding.data_mesh())
    self.images_per_call = images_per_device * self.mesh.devices.size
    self._maps_fn = None  # ``heatmaps``' network and flip test: compiled when first called
    super().__init__(config, variables)
    self._batch_fn = bottom_up.make_batch_fn(config, self.mesh)

  def set_variables(self, variables: Any) -> None:
    """Uses ``variables`` from now on, replicated on this process's devices."""
    self.variables = replicated_on(variables, self.mesh)

  def heatmaps(self, image_rgb: np.ndarray, boxes: Any = None
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The test's heatmaps of the whole image (its scales and flip), with the matrix from
    image pixels to them."""
    if boxes is not None:
      raise errors.UserError('a bottom-up model has no boxes: pass none')
    if self._maps_fn is None:
      self._maps_fn = bottom_up.make_maps_fn(self.config)
    maps, _, center, scale = bottom_up.image_maps(
        self.config, self.variables, self.model_input(np.asarray(image_rgb)), self._maps_fn)
    return [(maps, warp.affine_matrices(center[None], scale[None], maps.shape[1::-1])[0])]

  def people(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, K, 3) image x, y, score of every person found in one image, and (P,) scores."""
    return self.predict_images([image_rgb])[0]

  def predict_images(self, images: Sequence[np.ndarray | Callable[[], np.ndarray]],
                     shapes: Sequence[tuple[int, int] | None] | None = None
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(keypoints (P, K, 3), scores (P,)) of every image, as ``people`` of each.

    An image is an RGB array or a function that reads it; with its (height, width) in
    ``shapes`` it is read only when its batch is due (an image whose real shape differs is
    predicted alone). Images are grouped by input sizes; the results keep their order.
    """
    shapes = list(shapes) if shapes is not None else [None] * len(images)
    loaded = {}
    for i, image in enumerate(images):
      if shapes[i] is None:
        loaded[i] = self._read(image)
        shapes[i] = loaded[i].shape[:2]
    plans = [bottom_up.input_plan(*shape, self.config) for shape in shapes]
    groups = {}
    for i, plan in enumerate(plans):
      groups.setdefault(plan.key, []).append(i)
    results = [None] * len(images)
    pending = None
    for key, members in groups.items():
      pad_shape = warp.padded_shape([shapes[i] for i in members])  # one compile per group
      for start in range(0, len(members), self.images_per_call):
        chunk, arrays = [], []
        for i in members[start:start + self.images_per_call]:
          array = loaded.pop(i, None)
          array = self._read(images[i]) if array is None else array
          if array.shape[:2] != tuple(shapes[i]):  # the listed shape was wrong
            results[i] = self._predict_alone(array)
            continue
          chunk.append(i)
          arrays.append(array)
        if not chunk:
          continue
        running = (chunk, [plans[i] for i in chunk],
                   self._dispatch(arrays, [plans[i] for i in chunk], key, pad_shape))
        if pending is not None:
          self._group(*pending, results)  # on the host, while the devices run ``running``
        pending = running
    if pending is not None:
      self._group(*pending, results)
    return results

  def _read(self, image) -> np.ndarray:
    """The model input of an image or of what a reading function returns."""
    return self.model_input(np.asarray(image() if callable(image) else image))

  def _predict_alone(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The people of one image in a batch of its own (padded to the device count)."""
    plan = bottom_up.input_plan(*image.shape[:2], self.config)
    results = [None]
    self._group([0], [plan], self._dispatch([image], [plan], plan.key,
                                            warp.padded_shape([image.shape])), results)
    return results[0]

  def _dispatch(self, arrays: list[np.ndarray], plans: list[bottom_up.InputPlan], key,
                pad_shape: tuple[int, int]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Starts the device part of a batch; rows past ``arrays`` repeat the first image."""
    devices = self.mesh.devices.size
    count = -(-len(arrays) // devices) * devices
    rows = list(range(len(arrays))) + [0] * (count - len(arrays))
    images, sizes = warp.pad_images([arrays[r] for r in rows], shape=pad_shape)
    coordinates = tuple((np.stack([plans[r].coordinates[k][0] for r in rows]),
                         np.stack([plans[r].coordinates[k][1] for r in rows]))
                        for k in range(len(key[0])))
    placed = jax.device_put((images, sizes, coordinates), sharding.batch_sharded(self.mesh))
    return self._batch_fn(self.variables, *placed, key)

  def _group(self, chunk: list[int], plans: list[bottom_up.InputPlan], outputs,
             results: list) -> None:
    """The official grouping of each image of a finished batch, into ``results``."""
    det, nms_det, tags = (np.asarray(x) for x in outputs)
    for row, (i, plan) in enumerate(zip(chunk, plans)):
      results[i] = bottom_up.group_people(det[row], tags[row], plan.center, plan.scale,
                                          self.config.test, nms_det[row],
                                          self.keypoint_set.order())

  def __call__(self, images: Sequence[np.ndarray],
               boxes: Sequence[Any] | None = None,
               box_scores: Sequence[Any] | None = None) -> list[People]:
    """Every person of each whole image, as the official test (no boxes, no NMS)."""
    if boxes is not None and any(b is not None for b in boxes):
      raise errors.UserError('a bottom-up model finds every person of the whole image itself: '
                             'pass no boxes')
    del box_scores
    people = []
    for found, scores in self.predict_images(list(images)):
      people.append(People(keypoints=found[..., :2], joint_scores=found[..., 2],
                           scores=scores, boxes=keypoint_boxes(found[..., :2], found[..., 2])))
    return people
