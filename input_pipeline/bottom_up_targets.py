"""Bottom-up training targets, as the official HigherHRNet generators (numpy, one image).

Joints are (P, K, 3) rows of x, y, visibility in output pixels. A joint at (x, y) belongs to
pixel (int(x), int(y)), whose centre the grouping reads back as int(x) + 0.5.
"""

from __future__ import annotations

import numpy as np


def multi_person_heatmaps(joints: np.ndarray, height: int, width: int,
                          sigma: float) -> np.ndarray:
  """The official ``HeatmapGenerator``: (H, W, K) max over people of unnormalised Gaussians.

  Each labelled joint inside the map gets exp(-d^2 / 2 sigma^2) around pixel (int(x), int(y)),
  cut to the official (6 sigma + 3)-pixel window.
  """
  joints = np.asarray(joints, np.float64).reshape(-1, joints.shape[-2], 3)
  num_joints = joints.shape[1]
  heatmaps = np.zeros((height, width, num_joints), np.float32)
  radius = 3 * sigma + 1  # the window spans [x - 3 sigma - 1, x + 3 sigma + 2)
  for person in joints:
    for k, (x, y, v) in enumerate(person):
      if v <= 0:
        continue
      x, y = int(x), int(y)
      if x < 0 or y < 0 or x >= width or y >= height:
        continue
      x0, x1 = max(0, int(np.round(x - radius))), min(width, int(np.round(x + radius + 1)))
      y0, y1 = max(0, int(np.round(y - radius))), min(height, int(np.round(y + radius + 1)))
      xs = np.arange(x0, x1) - x
      ys = np.arange(y0, y1) - y
      g = np.exp(-(xs[None, :]**2 + ys[:, None]**2) / (2 * sigma**2)).astype(np.float32)
      heatmaps[y0:y1, x0:x1, k] = np.maximum(heatmaps[y0:y1, x0:x1, k], g)
  return heatmaps


def tag_locations(joints: np.ndarray, height: int, width: int,
                  max_num_people: int) -> np.ndarray:
  """The official ``JointsGenerator``: (max_num_people, K, 2) flat index k*H*W + y*W + x, 1.

  People beyond ``max_num_people`` are dropped; unlabelled or outside joints stay (0, 0).
  """
  joints = np.asarray(joints, np.float64).reshape(-1, joints.shape[-2], 3)
  num_joints = joints.shape[1]
  out = np.zeros((max_num_people, num_joints, 2), np.int32)
  for i, person in enumerate(joints[:max_num_people]):
    for k, (x, y, v) in enumerate(person):
      x, y = int(x), int(y)
      if v > 0 and 0 <= x < width and 0 <= y < height:
        out[i, k] = (k * height * width + y * width + x, 1)
  return out
