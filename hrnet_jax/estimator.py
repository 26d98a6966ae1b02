"""``PoseEstimator``: the people of photos in one call, for both model kinds.

>>> from hrnet_jax import PoseEstimator
>>> estimator = PoseEstimator('hrnet_w32_coco_256x192')   # doctest: +SKIP

runs as this, from the repository root, with the official small model of the tests (a .pth
and its recipe; tests/test_estimator.py runs it):

>>> estimator = PoseEstimator('tests/fixtures/official_hrnet/small_hrnet.pth',
...                           config='configs/small_hrnet.py')
>>> people = estimator('tests/fixtures/real_data/coco/000000196141.jpg')
>>> person = people[0]
>>> person.keypoints.shape, person.joint_scores.shape, person.box.shape
((17, 2), (17,), (4,))

A model is a zoo name, a converted checkpoint folder, a training run folder or a ``.pth``
(with ``config=``). A top-down model gets its person boxes from ``detector`` (by default
OpenCV's HOG people detector, ``detectors.HogDetector``) or from ``boxes=`` in the call; a
bottom-up model finds every person itself. Images are file paths or arrays, RGB unless
``bgr=True`` (OpenCV's order); all the people of all the images of one call go through the
network together (``predictors``: fixed-size batches, image sides padded to a multiple of
``warp.PAD_MULTIPLE``, so mixed sizes compile a bounded number of times).

``estimator.video(source)`` gives the people of every frame of a video, camera, stream or
folder (``media.open_input``) with track ids (``tracking.PoseTracker``), several frames per
network call.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import jax
import ml_collections
import numpy as np

from hrnet_jax import (checkpoints, config_lib, detectors, errors, media, predictors, sharding,
                       tasks, tracking, zoo)

ImageLike = Union[str, os.PathLike, np.ndarray]
FRAMES_PER_CALL = 8  # video frames whose people go through the network together (files)


@dataclasses.dataclass(frozen=True)
class Person:
  """One person found in an image, in the image's pixels."""
  keypoints: np.ndarray  # (K, 2) float64 x, y
  joint_scores: np.ndarray  # (K,) the heatmap maxima
  score: float  # the person score of the official test
  box: np.ndarray  # (4,) x, y, width, height: the detector's box (top-down) or the joints'
  track_id: int | None = None  # in a video, the same person's id from frame to frame

  def __repr__(self) -> str:
    box = ', '.join(f'{v:.0f}' for v in self.box)
    track = '' if self.track_id is None else f', track_id={self.track_id}'
    joints = f'{len(self.keypoints)} keypoints (mean score {np.mean(self.joint_scores):.3f})'
    return f'Person(score={self.score:.3f}, box=({box}), {joints}{track})'


def people_array(people: Sequence[Person]) -> np.ndarray:
  """(P, K, 3): x, y and score of each joint, the layout of COCO results and drawing."""
  if not people:
    return np.zeros((0, 0, 3))
  return np.stack([np.concatenate([p.keypoints, p.joint_scores[:, None]], axis=1)
                   for p in people])


def load_model(model: str, config: ml_collections.ConfigDict | str | None = None,
               checkpoint: str = 'latest', mesh: jax.sharding.Mesh | None = None
               ) -> tuple[ml_collections.ConfigDict, Any, str]:
  """(config, variables replicated over ``mesh``, a description) of a zoo name, a training
  run folder (its config.json and ``checkpoint``), a converted folder (with its config.json,
  or ``config``) or a .pth (with ``config``)."""
  mesh = mesh or sharding.data_mesh()
  if isinstance(config, (str, os.PathLike)):
    config = config_lib.load_recipe(config)
  model = os.fspath(model)
  has_config = os.path.isfile(os.path.join(model, config_lib.CONFIG_FILE))
  if os.path.isdir(os.path.join(model, checkpoints.VARIABLES_DIR)):  # converted weights
    config = config or (config_lib.load_saved_config(model) if has_config else None)
  elif has_config or os.path.isdir(os.path.join(model, checkpoints.CHECKPOINTS_DIR)):  # a run
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
  replaces the detector of a top-down model. ``backend='onnxruntime'`` runs a top-down
  network's ONNX export in ONNX Runtime on every core (``tasks.BACKENDS``).
  """

  def __init__(self, model: str, *, config: ml_collections.ConfigDict | str | None = None,
               detector: detectors.Detector | str | None = 'hog', checkpoint: str = 'latest',
               mesh: jax.sharding.Mesh | None = None, backend: str = 'jax'):
    self.config, variables, self.description = load_model(model, config, checkpoint, mesh)
    self.predictor = tasks.get_task(self.config).predictor(variables, mesh, backend)
    self.keypoint_set = self.predictor.keypoint_set
    # Bottom-up: no boxes; top-down without a detector: the whole image is one box.
    self.detector = detectors.get_detector(detector) if self.takes_boxes else None

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

  def predict(self, images_rgb: Sequence[np.ndarray], boxes: Sequence[Any] | None = None,
              box_scores: Sequence[Any] | None = None) -> list[list[Person]]:
    """The people of RGB uint8 images; ``boxes`` (and their ``box_scores``, default 1) per
    image for a top-down model, else the detector's."""
    if boxes is not None and len(boxes) != len(images_rgb):
      raise errors.UserError(f'got {len(boxes)} box lists for {len(images_rgb)} images')
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

  def heatmaps(self, image: ImageLike, *, bgr: bool = False, boxes: Any = None
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The network's heatmaps of one image for viewing (``drawing.draw_heatmaps``): per
    person box (the detector's, top-down) or of the whole image (bottom-up)."""
    rgb = self.read(image, bgr)
    if self.takes_boxes and boxes is None and self.detector is not None:
      boxes = self.detector(rgb)[0]
    return self.predictor.heatmaps(rgb, boxes)

  def video(self, source: str | int | media.Input | Iterable[media.Frame | np.ndarray], *,
            bgr: bool = False, track: bool = True, smoothing: Mapping[str, float] | None = None,
            boxes_of: Callable[[media.Frame], detectors.Detections] | None = None,
            frames_per_call: int | None = None
            ) -> Iterator[tuple[media.Frame, list[Person]]]:
    """(frame, people) of each frame of a video file, camera index, stream URL, folder or
    image (``media.open_input``), or of an iterable of frames (arrays RGB unless ``bgr``).

    People carry track ids with ``track`` (``tracking.PoseTracker``: greedy OKS, else box IoU
    matching); ``smoothing`` (One-Euro filter settings, e.g. ``{'min_cutoff': 1.0, 'beta':
    0.01}``) smooths their keypoints. ``boxes_of(frame)`` replaces the detector.
    ``frames_per_call`` frames go through the network together (default: 8 from a file, 1
    from a live camera or stream, so no frame waits for later ones).
    """
    if isinstance(source, (str, int, os.PathLike)):
      source = media.open_input(source)
    live = getattr(source, 'live', False)
    frames_per_call = frames_per_call or (1 if live else FRAMES_PER_CALL)
    tracker = (tracking.PoseTracker(self.keypoint_set.sigmas, smoothing=smoothing)
               if track else None)
    frames = (self._as_frame(item, i, bgr) for i, item in enumerate(source))
    clock = -np.inf  # the tracker's time: increasing, even if a live clock reads twice alike
    while chunk := list(itertools.islice(frames, frames_per_call)):
      rgb = [np.ascontiguousarray(frame.image[..., ::-1]) for frame in chunk]
      boxes = scores = None
      if boxes_of is not None:
        found = [boxes_of(frame) for frame in chunk]
        boxes, scores = [b for b, _ in found], [s for _, s in found]
      for frame, people in zip(chunk, self.predict(rgb, boxes, scores)):
        if tracker is not None:
          clock = max(frame.timestamp, clock + 1e-6)
          people = self._track(tracker, people, clock)
        yield frame, people

  @staticmethod
  def _as_frame(item: media.Frame | np.ndarray, index: int, bgr: bool) -> media.Frame:
    if isinstance(item, media.Frame):
      return item
    array = np.asarray(item)
    if array.ndim != 3 or array.shape[2] != 3:
      raise errors.UserError(f'frame {index}: expected an (H, W, 3) image; got shape '
                             f'{array.shape}')
    return media.Frame(index, index, f'frame {index}',
                       array if bgr else np.ascontiguousarray(array[..., ::-1]),
                       index / media.DEFAULT_FPS)

  def _track(self, tracker: tracking.PoseTracker, people: list[Person],
             timestamp: float) -> list[Person]:
    """``people`` with their track ids (and smoothed keypoints)."""
    k = self.keypoint_set.num_joints
    tracked = tracker.update(
        np.asarray([p.keypoints for p in people], np.float64).reshape(-1, k, 2),
        np.asarray([p.joint_scores for p in people], np.float64).reshape(-1, k),
        np.asarray([p.box for p in people], np.float64).reshape(-1, 4), timestamp)
    return [dataclasses.replace(p, keypoints=xy, track_id=int(t))
            for p, xy, t in zip(people, tracked.keypoints, tracked.track_ids)]


def _people(people: predictors.People) -> list[Person]:
  return [Person(people.keypoints[i], people.joint_scores[i], float(people.scores[i]),
                 people.boxes[i]) for i in range(len(people))]
