"""Skeleton drawing of predicted people (``launch/demo.py``)."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from hrnet_jax import keypoints as kp

_WARM, _COOL, _CENTRE = (0, 140, 255), (255, 120, 0), (60, 200, 60)  # BGR: left, right, middle


def limb_colour(a: int, b: int, names: Sequence[str]) -> tuple[int, int, int]:
  """BGR colour of a limb: warm for the person's left side, cool for the right."""
  sides = {names[a].split('_')[0], names[b].split('_')[0]}
  if 'left' in sides and 'right' not in sides:
    return _WARM
  if 'right' in sides and 'left' not in sides:
    return _COOL
  return _CENTRE


def draw_people(image_bgr: np.ndarray, people: np.ndarray, keypoint_set: kp.KeypointSet,
                threshold: float = 0.3, boxes=None) -> np.ndarray:
  """A copy of the image with each person's skeleton (keypoints above ``threshold``)."""
  canvas = image_bgr.copy()
  if len(people) and people.shape[1] != keypoint_set.num_joints:
    raise ValueError(f'people have {people.shape[1]} joints; the keypoint set '
                     f'{keypoint_set.name!r} has {keypoint_set.num_joints}')
  names = keypoint_set.names
  thickness = max(1, round(min(canvas.shape[:2]) / 240))
  for box in boxes if boxes is not None else ():
    x, y, w, h = (int(round(v)) for v in box)
    cv2.rectangle(canvas, (x, y), (x + w, y + h), (200, 200, 200), 1, cv2.LINE_AA)
  for person in people:
    shown = person[:, 2] > threshold
    for a, b in keypoint_set.skeleton:
      if shown[a] and shown[b]:
        cv2.line(canvas, tuple(int(round(v)) for v in person[a, :2]),
                 tuple(int(round(v)) for v in person[b, :2]), limb_colour(a, b, names),
                 thickness + 1, cv2.LINE_AA)
    for j in np.flatnonzero(shown):
      colour = limb_colour(j, j, names)
      cv2.circle(canvas, tuple(int(round(v)) for v in person[j, :2]), thickness + 2, colour, -1,
                 cv2.LINE_AA)
  return canvas
