"""Drawing of predicted people: skeletons, boxes, track ids and heatmaps (BGR images)."""

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


def track_colour(track_id: int) -> tuple[int, int, int]:
  """A BGR colour of a track id: well apart for neighbouring ids (golden-ratio hues)."""
  hue = int((track_id * 0.618033988749895 % 1.0) * 180)
  bgr = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
  return tuple(int(v) for v in bgr)


def draw_people(image_bgr: np.ndarray, people: np.ndarray, keypoint_set: kp.KeypointSet,
                threshold: float = 0.3, boxes=None, track_ids=None) -> np.ndarray:
  """A copy of the image with each person's skeleton (keypoints above ``threshold``).

  ``people`` is (P, K, 3): x, y, score. Limbs are warm on the person's left, cool on the
  right; with ``track_ids`` each person's limbs, box and id label take the track's colour.
  """
  canvas = image_bgr.copy()
  if len(people) and people.shape[1] != keypoint_set.num_joints:
    raise ValueError(f'people have {people.shape[1]} joints; the keypoint set '
                     f'{keypoint_set.name!r} has {keypoint_set.num_joints}')
  names = keypoint_set.names
  thickness = max(1, round(min(canvas.shape[:2]) / 240))
  ids = list(track_ids) if track_ids is not None else [None] * len(people)
  colours = [None if t is None else track_colour(int(t)) for t in ids]
  for i, box in enumerate(boxes if boxes is not None else ()):
    x, y, w, h = (int(round(v)) for v in box)
    colour = colours[i] if i < len(colours) and colours[i] else (200, 200, 200)
    cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, 1, cv2.LINE_AA)
  for i, person in enumerate(people):
    shown = person[:, 2] > threshold
    for a, b in keypoint_set.skeleton:
      if shown[a] and shown[b]:
        cv2.line(canvas, tuple(int(round(v)) for v in person[a, :2]),
                 tuple(int(round(v)) for v in person[b, :2]),
                 colours[i] or limb_colour(a, b, names), thickness + 1, cv2.LINE_AA)
    for j in np.flatnonzero(shown):
      colour = limb_colour(j, j, names)
      cv2.circle(canvas, tuple(int(round(v)) for v in person[j, :2]), thickness + 2, colour, -1,
                 cv2.LINE_AA)
    if colours[i] and shown.any():
      x, y = person[shown, :2].min(axis=0)
      cv2.putText(canvas, f'id {int(ids[i])}', (int(x), max(0, int(y) - 4)),
                  cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, colours[i], thickness, cv2.LINE_AA)
  return canvas


def draw_heatmaps(image_bgr: np.ndarray, heatmaps, opacity: float = 0.5) -> np.ndarray:
  """A copy of the image under the joints' heatmaps (their maximum over joints and people,
  JET colours): ``heatmaps`` is a list of (maps (h, w, K), matrix (2, 3) image -> maps)."""
  height, width = image_bgr.shape[:2]
  total = np.zeros((height, width), np.float32)
  for maps, matrix in heatmaps:
    top = np.asarray(maps, np.float32).max(axis=-1)
    total = np.maximum(total, cv2.warpAffine(
        top, np.asarray(matrix, np.float64), (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0.0))
  colours = cv2.applyColorMap(np.uint8(np.clip(total, 0.0, 1.0) * 255), cv2.COLORMAP_JET)
  weight = (np.clip(total, 0.0, 1.0) * opacity)[..., None]
  return np.uint8(np.round(image_bgr * (1 - weight) + colours * weight))
