"""``PoseEstimator``: the people of photos in one call, for both model kinds.

>>> from hrnet_jax import PoseEstimator
>>> estimator = PoseEstimator('hrnet_w32_coco_256x192')   # doctest: +SKIP
>>> people = estimator('photo.jpg')                       # doctest: +SKIP
>>> people[0].keypoints.shape, people[0].joint_scores.shape   # doctest: +SKIP
((17, 2), (17,))

A model is a zoo name, a converted checkpoint folder, a training run folder or a ``.pth``
(with ``config=``). A top-down model gets its person boxes from ``detector`` (by default
OpenCV's HOG people detector, ``detectors.HogDetector``) or from ``boxes=`` in the call; a
bottom-up model finds every person itself. Images are file paths or arrays, RGB unless
``bgr=True`` (OpenCV's order); all the people of all the images of one call go through the
network together (``predictors``: fixed-size batches, image sides padded to a multiple of
``warp.PAD_MULTIPLE``, so mixed sizes compile a bounded number of times).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence, Union

import jax
import ml_collections
import numpy as np

from hrnet_jax import (checkpoints, config_lib, detectors, errors, predictors, sharding,
                       tasks, zoo)

ImageLike = Union[str, os.PathLike, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Person:
  """One person found in an image, in the image's pixels."""
  keypoints: np.ndarray  # (K, 2) float64 x, y
  joint_scores: np.ndarray  # (K,) the heatmap maxima
  score: float  # the person score of the official test
  box: np.ndarray  # (4,) x, y, width, height: the detector's box (top-down) or the joints'
  track_id: int | None = None  # in a video, the same person's id from frame to frame


def _recipe(config: ml_collections.ConfigDict | str | None) -> ml_collections.ConfigDict | None:
  """A ConfigDict, or the ``get_config()`` of a recipe file (configs/*.py)."""
  if config is None or isinstance(config, ml_collections.ConfigDict):
    return config
  import importlib.util  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(config):
    raise errors.MissingFileError(f'config file {config} does not exist')
  spec = importlib.util.spec_from_file_location('recipe', config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def load_model(model: str, config: ml_collections.ConfigDict | str | None = None,
               checkpoint: str = 'latest', mesh: jax.sharding.Mesh | None = None
               ) -> tuple[ml_collections.ConfigDict, Any, str]:
  """(config, variables replicated over ``mesh``, a description) of a zoo name, a training
  run folder (its config.json and ``checkpoint``), a converted folder or a .pth."""
  mesh = mesh or sharding.data_mesh()
  config = _recipe(config)
  model = os.fspath(model)
  if (os.path.isfile(os.path.join(model, config_lib.CONFIG_FILE)) or
      os.path.isdir(os.path.join(model, checkpoints.CHECKPOINTS_DIR))):  # a training run
    config = config or config_lib.load_saved_config(model)
    variables, step, _ = checkpoints.restore_run_variables(
        model, checkpoint, config.model, sharding.replicated(mesh))
    return config, variables, f'{model} (step {step})'
  config = zoo.config_for(model, config)
  variables = jax.device_put(zoo.load_variables(model, config.model), sharding.replicated(mesh))
  return config, variables, model


class PoseEstimator:
  """People from images: ``estimator(image_or_images, bgr=False, boxes=None)``.

  One image (a path or an (H, W, 3) uint8 array) gives a list of ``Person``; a list of images
  gives one such list per image. ``boxes`` (x, y, w, h per image, or one list for one image)
  replaces the detector of a top-down model.
  """

  def __init__(self, model: str, *, config: ml_collections.ConfigDict | str | None = None,
               detector: detectors.Detector | str | None = 'hog', checkpoint: str = 'latest',
               mesh: jax.sharding.Mesh | None = None):
    self.config, variables, self.description = load_model(model, config, checkpoint, mesh)
    self.predictor = tasks.get_task(self.config).predictor(variables, mesh)
    self.keypoint_set = self.predictor.keypoint_set
    if not self.predictor.takes_boxes or detector is None:
      detector = None  # bottom-up: no boxes; top-down without: the whole image
    elif detector == 'hog':
      detector = detectors.HogDetector()
    elif isinstance(detector, str):
      raise errors.UserError(f'detector {detector!r}: expected "hog", None or a callable '
                             f'(image_rgb -> boxes, scores)')
    self.detector = detector

  @property
  def takes_boxes(self) -> bool:
    """Whether the model is top-down (finds people in boxes)."""
    return self.predictor.takes_boxes

  def read(self, image: ImageLike, bgr: bool = False) -> np.ndarray:
    """An image as the model reads it: RGB uint8 (H, W, 3). Paths are decoded as evaluation
    decodes them (EXIF orientation ignored, as officially); arrays are taken as RGB, or as BGR
    with ``bgr``."""
    if isinstance(image, (str, os.PathLike)):
      if not os.path.isfile(image):
        raise errors.MissingFileError(f'image {os.fspath(image)} does not exist')
      return tasks.read_rgb(os.fspath(image))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
      raise errors.UserError(f'expected an image path or an (H, W, 3) array; got an array of '
                             f'shape {array.shape}')
    return self.predictor.model_input(array[..., ::-1] if bgr else array)

  def __call__(self, images: ImageLike | Sequence[ImageLike], *, bgr: bool = False,
               boxes: Sequence[Any] | None = None
               ) -> list[Person] | list[list[Person]]:
    """The people of one image, or of each image of a list."""
    single = isinstance(images, (str, os.PathLike)) or (
        isinstance(images, np.ndarray) and images.ndim == 3)
    batch = [images] if single else list(images)
    if boxes is not None and single:
      boxes = [boxes]
    rgb = [self.read(image, bgr) for image in batch]
    people = self.predict(rgb, boxes)
    return people[0] if single else people

  def predict(self, images_rgb: Sequence[np.ndarray], boxes: Sequence[Any] | None = None
              ) -> list[list[Person]]:
    """The people of RGB uint8 images; ``boxes`` per image (top-down), else the detector's."""
    if boxes is not None and len(boxes) != len(images_rgb):
      raise errors.UserError(f'got {len(boxes)} box lists for {len(images_rgb)} images')
    box_scores = None
    if self.takes_boxes:
      if boxes is None and self.detector is not None:
        found = [self.detector(image) for image in images_rgb]
        boxes, box_scores = [b for b, _ in found], [s for _, s in found]
      found = self.predictor(images_rgb, boxes, box_scores)
    else:
      if boxes is not None:
        raise errors.UserError('a bottom-up model finds every person itself: pass no boxes')
      found = self.predictor(images_rgb)
    return [_people(p) for p in found]


def _people(people: predictors.People) -> list[Person]:
  return [Person(people.keypoints[i], people.joint_scores[i], float(people.scores[i]),
                 people.boxes[i]) for i in range(len(people))]
