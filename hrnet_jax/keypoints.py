"""Keypoint constants: COCO and MPII joint names, flip pairs, skeletons and OKS sigmas.

Every other module takes these from here; nothing else hard-codes joint indices.
"""

from __future__ import annotations

import numpy as np

# The official box-scale unit: scale = box size / PIXEL_STD (COCO and MPII alike).
PIXEL_STD = 200.0
# The COCO category id of people (in annotations, detections and keypoint results).
PERSON_CATEGORY = 1

COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear',
    'left_shoulder', 'right_shoulder', 'left_elbow', 'right_elbow',
    'left_wrist', 'right_wrist', 'left_hip', 'right_hip',
    'left_knee', 'right_knee', 'left_ankle', 'right_ankle',
)

# Pairs of (left, right) joints swapped by a horizontal flip, as the official code.
COCO_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

# Joints of the upper body, used by the half-body augmentation (the rest is lower body).
COCO_UPPER_BODY_IDS: tuple[int, ...] = tuple(range(11))
COCO_LOWER_BODY_IDS: tuple[int, ...] = tuple(range(11, 17))

# Per-joint loss weights of the official COCO config (1.0 / 1.2 / 1.5); used by half body.
COCO_JOINTS_WEIGHT: tuple[float, ...] = (
    1., 1., 1., 1., 1., 1., 1., 1.2, 1.2, 1.5, 1.5, 1., 1., 1.2, 1.2, 1.5, 1.5)

# COCO skeleton, 0-based joint indices.
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
    (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
    (3, 5), (4, 6))

# Per-keypoint OKS sigmas of the COCO evaluation (pycocotools' values).
COCO_OKS_SIGMAS: np.ndarray = np.array([
    .26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
    .89, .89]) / 10.0

MPII_KEYPOINT_NAMES: tuple[str, ...] = (
    'right_ankle', 'right_knee', 'right_hip', 'left_hip', 'left_knee', 'left_ankle',
    'pelvis', 'thorax', 'upper_neck', 'head_top', 'right_wrist', 'right_elbow',
    'right_shoulder', 'left_shoulder', 'left_elbow', 'left_wrist')

MPII_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))

# The official MPII half-body split: thorax, neck, head and arms.
MPII_UPPER_BODY_IDS: tuple[int, ...] = (7, 8, 9, 10, 11, 12, 13, 14, 15)

MPII_SKELETON: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
    (7, 12), (12, 11), (11, 10), (7, 13), (13, 14), (14, 15))


def flip_permutation(num_joints: int, flip_pairs) -> np.ndarray:
  """Returns the joint permutation of a horizontal flip: perm[k] is k's mirror joint."""
  perm = np.arange(num_joints)
  for a, b in flip_pairs:
    if not (0 <= a < num_joints and 0 <= b < num_joints):
      raise ValueError(f'flip pair {(a, b)} is out of range for {num_joints} joints')
    perm[a], perm[b] = b, a
  return perm


def skeleton_for(num_joints: int) -> dict[str, tuple]:
  """The flip pairs, upper-body ids and limbs of the COCO (17) or MPII (16) skeleton."""
  if num_joints == len(COCO_KEYPOINT_NAMES):
    return {'flip_pairs': COCO_FLIP_PAIRS, 'upper_body_ids': COCO_UPPER_BODY_IDS,
            'limbs': COCO_SKELETON}
  if num_joints == len(MPII_KEYPOINT_NAMES):
    return {'flip_pairs': MPII_FLIP_PAIRS, 'upper_body_ids': MPII_UPPER_BODY_IDS,
            'limbs': MPII_SKELETON}
  raise ValueError(f'no skeleton for {num_joints} joints: expected 17 (COCO) or 16 (MPII)')
