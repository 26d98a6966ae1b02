"""One task per model kind: everything that differs between top-down and bottom-up, chosen once.

``get_task(config)`` is the only place that looks at the model kind. A task gives the
training input size, the pure train step and the batch keys it reads, the training data, the
COCO-format predictions of the val split (what evaluators score) and the predictor. Adding a
model kind means writing one more ``Task`` and naming it in ``TASKS``.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import os
import time
from typing import Any, Callable, Iterator

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tensorflow as tf

from hrnet_jax import bottom_up, errors, evaluation, predictors, sharding, steps
from hrnet_jax import keypoints as kp
from input_pipeline import bottom_up_pipeline, coco, datasets, pipeline, tfds_source


@dataclasses.dataclass(frozen=True)
class TrainingData:
  """The training examples of a config, read once: how many, what they are, their batches."""
  count: int
  what: str  # 'people' or 'images', for messages
  # (start_step, process_index, process_count) -> this process's share of each global batch
  open: Callable[[int, int, int], Iterator[dict[str, np.ndarray]]]


@dataclasses.dataclass(frozen=True)
class ValPredictions:
  """COCO keypoint results of a val split (all processes' people, on every process)."""
  results: list[dict]
  note: str  # what was predicted and how long it took, for the printed report


class ValSource(abc.ABC):
  """The val split of a config, ready to predict (boxes read, pipeline built) on every call."""
  ground_truth: dict  # the split's annotations in COCO form (``coco.Split.data``)
  split: str

  _last: tuple[Any, ValPredictions] | None = None

  def predict(self, variables: Any) -> ValPredictions:
    """Predicts the whole split with ``variables``, as the official test of the model kind
    (once per variables, until ``forget``: evaluators sharing the source share them)."""
    if self._last is None or self._last[0] is not variables:
      self._last = (variables, self.predict_split(variables))
    return self._last[1]

  def forget(self) -> None:
    """Drops the kept predictions and the reference to their variables (device memory)."""
    self._last = None

  @abc.abstractmethod
  def predict_split(self, variables: Any) -> ValPredictions:
    """Predicts the whole split with ``variables``."""


BACKENDS = ('jax', 'onnxruntime')  # what runs a predictor's network


class Task(abc.ABC):
  """What one model kind does for training, evaluation and prediction."""
  predictor_class: type[predictors.Predictor]
  val_class: type[ValSource]  # built with (config, mesh)
  network_outputs: tuple[str, ...]  # names of the network's outputs (export)
  export_heads: tuple[str, ...] = ('network',)  # where an exported graph may end
  backends: tuple[str, ...] = ('jax',)  # what can run the predictor's network

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @property
  @abc.abstractmethod
  def input_size(self) -> tuple[int, int]:
    """(width, height) of a training input."""

  @property
  @abc.abstractmethod
  def batch_keys(self) -> tuple[str, ...]:
    """The keys of a training batch that the train step reads."""

  @abc.abstractmethod
  def train_step(self) -> steps.StepFn:
    """The pure (state, batch, rng) -> (state, metrics) step of the config's loss."""

  @abc.abstractmethod
  def training_data(self) -> TrainingData:
    """The training split of ``config.dataset``."""

  def predictor(self, variables: Any, mesh: jax.sharding.Mesh | None = None,
                backend: str = 'jax') -> predictors.Predictor:
    """A predictor of people in whole images with ``variables``; ``backend`` (``BACKENDS``)
    runs the network: JAX, or the ONNX export in ONNX Runtime on every core."""
    if backend not in BACKENDS:
      raise errors.UserError(f'backend {backend!r}: expected one of {", ".join(BACKENDS)}')
    if backend not in self.backends:
      raise errors.UserError(
          f"backend {backend!r} is not available for {self.config.model.name} models (a "
          f"bottom-up input's size follows each image's; an export has one size): use "
          f"{' or '.join(repr(b) for b in self.backends)}")
    if backend == 'jax':
      return self.predictor_class(self.config, variables, mesh)
    from hrnet_jax import export  # pylint: disable=g-import-not-at-top  (onnxruntime, jax2onnx)
    return self.predictor_class(self.config, variables, mesh,
                                network=export.onnxruntime_network(self.exportable(variables)))

  def exportable(self, variables: Any, head: str = 'network') -> Any:
    """The ``export.Exportable`` of the network (head 'network'), or of the network and the
    test on crops (head 'decoded', top-down), on this kind's input size."""
    from hrnet_jax import export  # pylint: disable=g-import-not-at-top
    if head not in self.export_heads:
      raise errors.UserError(f'export head {head!r}: a {self.config.model.name} model exports '
                             f'{", ".join(self.export_heads)}')
    width, height = self.input_size
    net = export.network(self.config.model, variables, (height, width), self.network_outputs)
    return net if head == 'network' else export.decoded(self.config, net)

  def val_source(self, mesh: jax.sharding.Mesh) -> ValSource:
    """The val split of ``config.dataset`` as the official test of this kind predicts it."""
    return self.val_class(self.config, mesh)

  @abc.abstractmethod
  def describe_test(self) -> str:
    """How the val split is predicted, in a few words, for messages."""


def folder_data(config: ml_collections.ConfigDict, examples, spec, what: str,
                make_dataset=None) -> TrainingData:
  """Training data read from a folder by index: ``pipeline.TrainIterator`` over ``examples``."""

  def open_folder(start_step: int, process_index: int, process_count: int):
    return pipeline.TrainIterator(
        examples, spec, config.batch_size, seed=config.seed, start_step=start_step,
        process_index=process_index, process_count=process_count,
        skip_bad_images=config.dataset.skip_bad_images, make_dataset=make_dataset)
  return TrainingData(len(examples), what, open_folder)


def val_split(config: ml_collections.ConfigDict) -> coco.Split:
  """The val split's annotations, which the evaluators score against."""
  return datasets.read_split(config, config.dataset.val_split)


# ---------------------------------------------------------------------------- top-down ---


def sample_spec(config: ml_collections.ConfigDict) -> pipeline.SampleSpec:
  """What the top-down transforms need from ``config.dataset`` and ``config.augment``."""
  d, a = config.dataset, config.augment
  keypoint_set = kp.from_config(config)
  return pipeline.SampleSpec(
      tuple(d.image_size), tuple(d.heatmap_size), float(d.sigma), keypoint_set.flip_pairs,
      keypoint_set.upper_body_ids, a.scale_factor, a.rotation_factor, a.rotation_prob,
      float(a.flip), a.half_body_prob, a.num_joints_half_body,
      keypoint_set.joint_weights, udp=bool(d.udp),
      eval_udp=config.test.decoder == 'udp')


def eval_dataset(config: ml_collections.ConfigDict, split: coco.Split | None = None
                 ) -> tuple[tf.data.Dataset, coco.Instances | None, int]:
  """This process's batches of person crops of the val split, their instances (None from
  TFDS shards) and the number of boxes.

  Boxes are the ground truth (``test.use_gt_bbox``) or the detections of ``test.bbox_file``
  above ``test.image_thre``, as the official recipe.
  """
  d, test = config.dataset, config.test
  spec = sample_spec(config)
  where = dict(process_index=jax.process_index(), process_count=jax.process_count())
  if d.source == 'tfds':
    if not test.use_gt_bbox:
      raise errors.ConfigError(
          'config.test.use_gt_bbox=False (detection boxes) needs the image files: use '
          "config.dataset.source='folder' for evaluation with detections")
    builder = tfds_source.load_builder(d.tfds_data_dir)
    tfds_source.check_split(builder, d.val_split)
    n = int(tfds_source.people_per_example(builder)[d.val_split].sum())
    ds = tfds_source.eval_dataset(d.tfds_data_dir, d.val_split, spec, test.batch_size, **where)
    return ds, None, n
  split = split or val_split(config)
  if test.use_gt_bbox:
    instances = coco.load_ground_truth(split, aspect_ratio=spec.aspect_ratio,
                                       num_joints=config.model.num_joints,
                                       padding=d.box_padding)
  else:
    root = datasets.dataset_root(d)
    bbox_file = test.bbox_file if os.path.isabs(test.bbox_file) else os.path.join(
        root, test.bbox_file)
    instances = coco.load_detections(bbox_file, split, aspect_ratio=spec.aspect_ratio,
                                     num_joints=config.model.num_joints,
                                     score_threshold=test.image_thre, padding=d.box_padding)
  return (pipeline.eval_dataset(instances, spec, test.batch_size, **where), instances,
          len(instances))


class TopDownVal(ValSource):
  """Person boxes of the val split through the predictor, rescored and OKS-NMSed officially."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    self.config, self.mesh = config, mesh
    sharding.check_batch_size(config.test.batch_size)  # before reading every box
    self.split = self.config.dataset.val_split
    data = val_split(config)
    self.ground_truth = data.data
    self.dataset, self.instances, self.num_boxes = eval_dataset(self.config, data)
    self.predictor = None

  def crop_keypoints(self, variables: Any) -> dict[str, np.ndarray]:
    """keypoints (N, K, 3), center, scale, score, index (the box's row), image_id and
    annotation_id (0 for a detection) of every val box."""
    if self.predictor is None:
      self.predictor = predictors.TopDownPredictor(self.config, variables, self.mesh)
    self.predictor.set_variables(variables)
    parts = []
    try:
      for batch in self.dataset.as_numpy_iterator():
        if self.instances is not None:  # ids of any size, looked up on the host by row
          del batch['image_id']
        parts.append(self.predictor.crop_keypoints(batch))
    except tf.errors.OpError:
      bad = [] if self.instances is None else pipeline.find_bad_images(
          self.instances.image_paths)
      if bad:
        raise pipeline.DataError('; '.join(f'{path}: cannot read or decode the image ({why})'
                                           for path, why in bad[:5])) from None
      raise
    if not parts:
      raise errors.UserError('the evaluation set is empty: no person boxes to evaluate')
    found = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if self.instances is not None:
      found['image_id'] = self.instances.image_ids[found['index']]
      found['annotation_id'] = self.instances.annotation_ids[found['index']]
    elif 'image_id' not in found:
      raise errors.UserError('image ids of the TFDS shards must lie in [0, 2^31): use '
                             "config.dataset.source='folder' for larger ids")
    return found

  def predict_split(self, variables: Any) -> ValPredictions:
    start = time.time()
    found = self.crop_keypoints(variables)
    seconds = time.time() - start
    results = coco_results(self.config, found)
    return ValPredictions(results, f'{self.num_boxes} boxes, predicted in {seconds:.1f} s, '
                                   f'{len(results)} people after OKS NMS')


def coco_results(config: ml_collections.ConfigDict,
                 found: dict[str, np.ndarray]) -> list[dict]:
  """The official rescoring and OKS NMS of top-down ``found`` people, as COCO results.

  ``found`` holds keypoints (N, K, 3: image x, y, maxval), center, scale, score and image_id.
  """
  test = config.test
  return evaluation.keypoint_results(
      found['keypoints'], found['score'], found['image_id'], found['center'], found['scale'],
      in_vis_thre=test.in_vis_thre, oks_thre=test.oks_thre, soft_nms=test.soft_nms,
      sigmas=kp.from_config(config).sigmas)


class TopDownTask(Task):
  """HRNet: person boxes cropped to ``dataset.image_size``, heatmaps, JointsMSELoss."""
  predictor_class = predictors.TopDownPredictor
  val_class = TopDownVal
  network_outputs = ('heatmaps',)
  export_heads = ('network', 'decoded')
  backends = BACKENDS

  @property
  def input_size(self) -> tuple[int, int]:
    return tuple(self.config.dataset.image_size)

  @property
  def batch_keys(self) -> tuple[str, ...]:
    return steps.TOP_DOWN_BATCH_KEYS

  def train_step(self) -> steps.StepFn:
    return functools.partial(steps.train_step,
                             use_target_weight=self.config.loss.use_target_weight)

  def training_data(self) -> TrainingData:
    c, d = self.config, self.config.dataset
    spec = sample_spec(c)
    if d.source == 'tfds':
      builder = tfds_source.load_builder(d.tfds_data_dir)
      tfds_source.check_split(builder, d.train_split)
      count = int(tfds_source.people_per_example(builder)[d.train_split].sum())

      def open_tfds(start_step, process_index, process_count):
        return tfds_source.train_dataset(
            d.tfds_data_dir, d.train_split, spec, c.batch_size, seed=c.seed,
            start_step=start_step, process_index=process_index,
            process_count=process_count).as_numpy_iterator()
      return TrainingData(count, 'people', open_tfds)
    instances = coco.load_ground_truth(datasets.read_split(c, d.train_split),
                                       aspect_ratio=spec.aspect_ratio,
                                       num_joints=c.model.num_joints, padding=d.box_padding)
    return folder_data(c, instances, spec, 'people')

  def describe_test(self) -> str:
    test = self.config.test
    boxes = 'ground-truth boxes' if test.use_gt_bbox else test.bbox_file
    return f'{boxes}, flip test {test.flip_test}, decoder {test.decoder}'


# --------------------------------------------------------------------------- bottom-up ---


def bottom_up_spec(config: ml_collections.ConfigDict) -> bottom_up_pipeline.BottomUpSpec:
  """What the bottom-up transforms need from ``config.dataset`` and ``config.augment``."""
  d, a = config.dataset, config.augment
  if d.input_size % 4:
    raise errors.ConfigError(f'config.dataset.input_size must be a multiple of 4 (outputs at '
                             f'1/4 and 1/2); got {d.input_size}')
  keypoint_set = kp.from_config(config)
  return bottom_up_pipeline.BottomUpSpec(
      int(d.input_size), keypoint_set.num_joints, keypoint_set.flip_pairs,
      float(d.sigma), int(d.max_num_people), float(a.min_scale), float(a.max_scale),
      float(a.max_rotation), float(a.max_translate), float(a.flip))


def read_rgb(path: str) -> np.ndarray:
  """An image file as uint8 (H, W, 3) RGB, the pixels of the training and evaluation
  pipelines, or an error naming the file (``pipeline.read_rgb``)."""
  return pipeline.read_rgb(path)


class BottomUpVal(ValSource):
  """Every val image through the predictor; all people of each image, as the official test.

  Score = mean joint score, no NMS. Process k of P predicts images k::P on its local devices
  (images of equal input size batched over them, read when their batch is due); the people
  are gathered.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    self.config, self.mesh = config, mesh
    self.split = self.config.dataset.val_split
    data = val_split(config)
    self.ground_truth = data.data
    images = sorted(data.images, key=lambda i: i['id'])
    if not images:
      raise errors.UserError(f'{data.source}: no images to evaluate')
    self.image_ids = np.array([i['id'] for i in images], np.int64)  # every process's
    self.num_images = len(images)
    mine = images[jax.process_index()::jax.process_count()]
    self.paths = [i['path'] for i in mine]
    # The annotated (height, width) plan the batches; a wrong one costs only speed.
    self.shapes = [(int(i['height']), int(i['width'])) if 'height' in i and 'width' in i
                   else None for i in mine]
    self.predictor = None

  def predict_split(self, variables: Any) -> ValPredictions:
    start = time.time()
    if self.predictor is None:
      self.predictor = predictors.BottomUpPredictor(self.config, variables, self.mesh)
    else:
      self.predictor.set_variables(variables)
    k, cap = self.config.model.num_joints, self.config.test.max_num_people
    share = -(-self.num_images // jax.process_count())
    keypoints = np.zeros((share, cap, k, 3), np.float64)
    scores = np.zeros((share, cap), np.float64)
    counts = np.zeros((share,), np.int32)
    rows = np.full((share,), -1, np.int32)  # rows of self.image_ids: any id fits through
    found = self.predictor.predict_images(
        [functools.partial(read_rgb, path) for path in self.paths], self.shapes)
    for i, (people, person_scores) in enumerate(found):
      n = min(len(people), cap)
      keypoints[i, :n], scores[i, :n] = people[:n], person_scores[:n]
      counts[i], rows[i] = n, jax.process_index() + i * jax.process_count()
    if jax.process_count() > 1:
      keypoints, scores, counts, rows = (
          np.concatenate(list(x)) for x in multihost_utils.process_allgather(
              (keypoints, scores, counts, rows)))
    results = []
    for person_keypoints, person_scores, n, row in zip(keypoints, scores, counts, rows):
      if row >= 0:
        results += bottom_up.results_for_image(self.image_ids[row], person_keypoints[:n],
                                               person_scores[:n])
    return ValPredictions(results, f'{self.num_images} images, predicted in '
                                   f'{time.time() - start:.1f} s, {len(results)} people')


class BottomUpTask(Task):
  """HigherHRNet: whole images, heatmaps at 1/4 and 1/2, tags grouped into people."""
  predictor_class = predictors.BottomUpPredictor
  val_class = BottomUpVal
  network_outputs = ('quarter', 'half')  # K heatmaps and K tags at 1/4; K heatmaps at 1/2

  @property
  def input_size(self) -> tuple[int, int]:
    return (self.config.dataset.input_size,) * 2

  @property
  def batch_keys(self) -> tuple[str, ...]:
    return bottom_up_pipeline.BATCH_KEYS

  def train_step(self) -> steps.StepFn:
    loss = self.config.loss
    return functools.partial(steps.bottom_up_train_step,
                             heatmap_factors=tuple(loss.heatmap_factors),
                             push_factor=loss.push_factor, pull_factor=loss.pull_factor,
                             ae_type=loss.ae_type)

  def training_data(self) -> TrainingData:
    c, d = self.config, self.config.dataset
    if d.source == 'tfds':
      raise errors.ConfigError(
          "bottom-up training reads COCO-format folders: config.dataset.source 'tfds' is "
          "top-down only; use 'folder' or 'synthetic'")
    spec = bottom_up_spec(c)
    images = coco.load_people_images(datasets.read_split(c, d.train_split),
                                     num_joints=c.model.num_joints)
    return folder_data(c, images, spec, 'images', bottom_up_pipeline.train_dataset)

  def describe_test(self) -> str:
    test = self.config.test
    return (f'bottom-up (no boxes), scales {tuple(test.scale_factors)}, flip test '
            f'{test.flip_test}')


# ------------------------------------------------------------------------------ select ---

TASKS: dict[str, type[Task]] = {'pose_hrnet': TopDownTask, 'higher_hrnet': BottomUpTask}


def get_task(config: ml_collections.ConfigDict) -> Task:
  """The task of ``config.model.name``: the one place that looks at the model kind."""
  name = config.model.name
  if name not in TASKS:
    raise errors.ConfigError(f'config.model.name is {name!r}; expected one of {sorted(TASKS)}')
  return TASKS[name](config)
