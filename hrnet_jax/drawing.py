"""Top-down pose inference on arbitrary images: boxes in, keypoints in image pixels out.

The crops are made by the eval pipeline's own warp (``input_pipeline.transforms``), and the
network, flip test and decoding are the eval job's jitted step (``eval_lib.make_predict_fn``),
so a box gives the keypoints that ``launch/eval.py`` would give it.
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import ml_collections
import numpy as np

from hrnet_jax import eval_lib, evaluation, sharding
from hrnet_jax import keypoints as kp
from input_pipeline import coco, transforms

_WARM, _COOL, _CENTRE = (0, 140, 255), (255, 120, 0), (60, 200, 60)  # BGR: left, right, middle


class PosePredictor:
  """Keypoints of the people in given boxes, in fixed-size jitted batches."""

  def __init__(self, config: ml_collections.ConfigDict, variables: Any):
    self.config, self.variables = config, variables
    self.mesh = sharding.data_mesh()
    self.batch_size = config.test.batch_size
    sharding.check_batch_size(self.batch_size)
    self._predict = eval_lib.make_predict_fn(config, self.mesh)
    width, height = config.dataset.image_size
    self.aspect_ratio = width / height

  def crops(self, image_rgb: np.ndarray, boxes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised network inputs of each box (x, y, w, h), with their centers and scales."""
    t, size = transforms, self.config.dataset.image_size
    images, centers, scales = [], [], []
    for box in boxes:
      center, scale = coco.box_to_center_scale(box, self.aspect_ratio,
                                               self.config.dataset.box_padding)
      matrix = t.affine_matrix(center, scale, 0.0, size)
      images.append(t.normalize(t.warp_image(image_rgb, matrix, size)).numpy())
      centers.append(center)
      scales.append(scale)
    w, h = size
    return (np.stack(images) if images else np.zeros((0, h, w, 3), np.float32),
            np.array(centers, np.float32).reshape(-1, 2),
            np.array(scales, np.float32).reshape(-1, 2))

  def predict(self, images: np.ndarray, centers: np.ndarray,
              scales: np.ndarray) -> np.ndarray:
    """(M, K, 3) image x, y and maxval of M crops, run in padded batches of ``batch_size``."""
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
      result = {k: np.asarray(v)[:n] for k, v in result.items()}
      out.append(eval_lib.image_keypoints(self.config, result))
    num_joints = self.config.model.num_joints
    return np.concatenate(out) if out else np.zeros((0, num_joints, 3))


def person_scores(keypoints: np.ndarray, box_scores, in_vis_thre: float = 0.2) -> np.ndarray:
  """The official person score: box score x mean keypoint score above ``in_vis_thre``."""
  return evaluation.rescore(box_scores, keypoints[..., 2], in_vis_thre)


def limb_colour(a: int, b: int, names: Sequence[str]) -> tuple[int, int, int]:
  """BGR colour of a limb: warm for the person's left side, cool for the right."""
  sides = {names[a].split('_')[0], names[b].split('_')[0]}
  if 'left' in sides and 'right' not in sides:
    return _WARM
  if 'right' in sides and 'left' not in sides:
    return _COOL
  return _CENTRE


def draw_people(image_bgr: np.ndarray, people: np.ndarray, threshold: float = 0.3,
                boxes=None) -> np.ndarray:
  """A copy of the image with each person's skeleton (keypoints above ``threshold``)."""
  canvas = image_bgr.copy()
  num_joints = people.shape[1] if len(people) else 17
  skeleton = kp.skeleton_for(num_joints)
  names = kp.COCO_KEYPOINT_NAMES if num_joints == 17 else kp.MPII_KEYPOINT_NAMES
  thickness = max(1, round(min(canvas.shape[:2]) / 240))
  for box in boxes if boxes is not None else ():
    x, y, w, h = (int(round(v)) for v in box)
    cv2.rectangle(canvas, (x, y), (x + w, y + h), (200, 200, 200), 1, cv2.LINE_AA)
  for person in people:
    shown = person[:, 2] > threshold
    for a, b in skeleton['limbs']:
      if shown[a] and shown[b]:
        cv2.line(canvas, tuple(int(round(v)) for v in person[a, :2]),
                 tuple(int(round(v)) for v in person[b, :2]), limb_colour(a, b, names),
                 thickness + 1, cv2.LINE_AA)
    for j in np.flatnonzero(shown):
      colour = limb_colour(j, j, names)
      cv2.circle(canvas, tuple(int(round(v)) for v in person[j, :2]), thickness + 2, colour, -1,
                 cv2.LINE_AA)
  return canvas
