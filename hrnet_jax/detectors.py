"""Person detectors for top-down models: an RGB image in, person boxes (x, y, w, h) and scores
out, behind one small interface.

``HogDetector`` is OpenCV's built-in HOG + linear SVM people detector (Dalal and Triggs,
CVPR 2005): it needs no download, so a first run on a photo finds people, but it only finds
upright, mostly unoccluded people that fill its 64 x 128 window or more, misses seated or
crouching ones and crowds, and its boxes are loose; use a detection results file (or a real
detector) for accuracy. ``DetectionsFile`` reads a COCO detection results file.
"""

from __future__ import annotations

import json
import os
from typing import Protocol

import cv2
import numpy as np

from hrnet_jax import errors

Detections = tuple[np.ndarray, np.ndarray]  # (N, 4) float64 x, y, w, h; (N,) float64 scores


class Detector(Protocol):
  """Finds people: ``detector(image_rgb) -> (boxes (N, 4) x, y, w, h, scores (N,))``."""

  def __call__(self, image_rgb: np.ndarray) -> Detections:
    ...


def get_detector(spec: Detector | str | None) -> Detector | None:
  """The detector named by ``spec``: 'hog', None or 'none' (whole images as boxes), a .onnx
  file or a detector name of ``onnx_detectors`` (YOLOX, RTMDet), or a callable itself."""
  if spec is None or spec == 'none':
    return None
  if callable(spec):
    return spec
  if spec == 'hog':
    return HogDetector()
  from hrnet_jax import onnx_detectors  # pylint: disable=g-import-not-at-top  (onnxruntime)
  if isinstance(spec, (str, os.PathLike)) and (
      os.fspath(spec).endswith('.onnx') or onnx_detectors.is_detector_name(os.fspath(spec))):
    return onnx_detectors.OnnxDetector(os.fspath(spec))
  raise errors.UserError(
      f'detector {spec!r}: expected "hog", "none", a .onnx file, one of '
      f'{", ".join(onnx_detectors.DETECTORS)} or a callable (image_rgb -> boxes, scores)')


def no_people() -> Detections:
  """No boxes."""
  return np.zeros((0, 4), np.float64), np.zeros((0,), np.float64)


class HogDetector:
  """OpenCV's default HOG people detector, its boxes merged by NMS (IoU ``nms_threshold``).

  ``min_score`` is on the SVM's margin (about 0 .. 3; the scores are not probabilities);
  images are searched at ``scale`` steps down to the detector's 64 x 128 window, after
  being upscaled so that their shorter side is at least ``min_side`` pixels.
  """

  def __init__(self, min_score: float = 0.3, nms_threshold: float = 0.45,
               scale: float = 1.05, min_side: int = 400):
    self.min_score, self.nms_threshold = min_score, nms_threshold
    self.scale, self.min_side = scale, min_side
    self._hog = cv2.HOGDescriptor()
    self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

  def __call__(self, image_rgb: np.ndarray) -> Detections:
    """People boxes of an RGB uint8 image, best first."""
    height, width = image_rgb.shape[:2]
    zoom = max(1.0, self.min_side / max(1, min(height, width)))
    gray = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2GRAY)
    if zoom > 1.0:
      gray = cv2.resize(gray, (round(width * zoom), round(height * zoom)),
                        interpolation=cv2.INTER_LINEAR)
    rects, weights = self._hog.detectMultiScale(gray, winStride=(8, 8), padding=(8, 8),
                                                scale=self.scale)
    if len(rects) == 0:
      return no_people()
    boxes = np.asarray(rects, np.float64).reshape(-1, 4) / zoom
    scores = np.asarray(weights, np.float64).reshape(-1)
    keep = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self.min_score,
                            self.nms_threshold)
    keep = np.asarray(keep, np.int64).reshape(-1)
    boxes, scores = boxes[keep], scores[keep]
    order = np.argsort(-scores, kind='stable')
    boxes = boxes[order]
    # Inside the image (the window's padding can reach past its border).
    x0 = np.clip(boxes[:, 0], 0, width)
    y0 = np.clip(boxes[:, 1], 0, height)
    x1 = np.clip(boxes[:, 0] + boxes[:, 2], 0, width)
    y1 = np.clip(boxes[:, 1] + boxes[:, 3], 0, height)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1), scores[order]


class DetectionsFile:
  """Person boxes of a COCO detection results file (category 1, score >= ``threshold``).

  ``detections.for_image(image_id)`` gives an image's; a detection's ``image_id`` is matched
  to the number in an image's file name, its 0-based position in a sorted folder or a video's
  frame index (``media.image_id_of``).
  """

  def __init__(self, path: str, threshold: float = 0.5):
    if not os.path.isfile(path):
      raise errors.MissingFileError(f'detections file {path} does not exist')
    with open(path) as f:
      try:
        detections = json.load(f)
      except json.JSONDecodeError as e:
        raise errors.UserError(f'{path} is not valid JSON: {e}') from e
    if not isinstance(detections, list):
      raise errors.UserError(f'{path}: expected a COCO results list of detections')
    self.path = path
    self._boxes: dict[int, list[tuple[list, float]]] = {}
    for i, det in enumerate(detections):
      missing = [k for k in ('image_id', 'bbox', 'score') if k not in det]
      if missing:
        raise errors.UserError(f'{path}: detection {i} has no {", ".join(missing)}')
      if det.get('category_id', 1) == 1 and det['score'] >= threshold:
        self._boxes.setdefault(int(det['image_id']), []).append(
            (det['bbox'], float(det['score'])))

  def for_image(self, image_id: int) -> Detections:
    """The boxes listed for ``image_id`` (none if it has none)."""
    listed = self._boxes.get(int(image_id), [])
    if not listed:
      return no_people()
    return (np.asarray([b for b, _ in listed], np.float64).reshape(-1, 4),
            np.asarray([s for _, s in listed], np.float64))
