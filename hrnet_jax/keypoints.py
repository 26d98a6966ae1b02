"""Keypoint sets: each dataset's joint names, flip pairs, skeleton, OKS sigmas and half body.

A ``KeypointSet`` is data: the presets below are the official definitions of COCO, MPII,
CrowdPose and PoseTrack18, and a config's ``keypoints`` section holds one set (a preset's
values, or any other set written in a config file). Every other module takes joints from the
config's set (``from_config``); nothing else hard-codes joint indices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from hrnet_jax import errors

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


# The official grouping order of HigherHRNet (1-based there: 1-7, 12, 13, 8-11, 14-17): nose,
# eyes, ears, shoulders, hips, then elbows, wrists, knees, ankles. The official CrowdPose
# recipe groups its 14 joints in the first 14 entries of this order.
COCO_GROUPING_ORDER: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)

# Per-joint OKS sigmas of MPII, as mmpose (MPII has no official OKS; used by OKS NMS only).
MPII_OKS_SIGMAS: tuple[float, ...] = (
    .089, .083, .107, .107, .083, .089, .107, .107, .087, .087, .062, .072, .079, .079, .072,
    .062)

# The official MPII per-joint loss weights (``MPIIDataset.joints_weight``).
MPII_JOINTS_WEIGHT: tuple[float, ...] = (
    1.5, 1.2, 1., 1., 1.2, 1.5, 1., 1., 1., 1., 1.5, 1.2, 1., 1., 1.2, 1.5)

CROWDPOSE_KEYPOINT_NAMES: tuple[str, ...] = (
    'left_shoulder', 'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist',
    'right_wrist', 'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle',
    'right_ankle', 'head', 'neck')

# HigherHRNet's FLIP_CONFIG['CROWDPOSE']: head and neck stay.
CROWDPOSE_FLIP_PAIRS: tuple[tuple[int, int], ...] = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9),
                                                     (10, 11))

CROWDPOSE_SKELETON: tuple[tuple[int, int], ...] = (
    (12, 13), (13, 0), (13, 1), (0, 2), (2, 4), (1, 3), (3, 5), (0, 6), (1, 7), (6, 7),
    (6, 8), (8, 10), (7, 9), (9, 11))

# The crowdpose-api's OKS sigmas (crowdposetools/cocoeval.py, COCOeval.computeOks: COCO's
# values of the same joints; head and neck 0.079, the COCO shoulder value).
CROWDPOSE_OKS_SIGMAS: tuple[float, ...] = tuple(float(s) for s in np.array([
    .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89, .79, .79]) / 10.0)

# PoseTrack18: COCO's order with head_bottom and head_top where COCO has the eyes; the ears
# are never labelled.
POSETRACK18_KEYPOINT_NAMES: tuple[str, ...] = (
    'nose', 'head_bottom', 'head_top', 'left_ear', 'right_ear',
    'left_shoulder', 'right_shoulder', 'left_elbow', 'right_elbow',
    'left_wrist', 'right_wrist', 'left_hip', 'right_hip',
    'left_knee', 'right_knee', 'left_ankle', 'right_ankle',
)

# head_bottom (1) and head_top (2) lie on the body's axis: a flip keeps them in place.
POSETRACK18_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

# The skeleton of the PoseTrack18 annotation files (1-based there).
POSETRACK18_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))


@dataclasses.dataclass(frozen=True)
class KeypointSet:
  """The joints of a dataset, and what flips, draws, scores and groups them."""
  name: str
  names: tuple[str, ...]
  flip_pairs: tuple[tuple[int, int], ...]  # (left, right) joints swapped by a flip
  skeleton: tuple[tuple[int, int], ...]  # limbs, for drawing
  sigmas: tuple[float, ...]  # per-joint OKS sigmas (OKS NMS, COCOeval)
  upper_body_ids: tuple[int, ...]  # half-body augmentation: these against the others
  joint_weights: tuple[float, ...] = ()  # top-down per-joint loss weights; () = all 1
  grouping_order: tuple[int, ...] = ()  # bottom-up grouping order; () = index order

  @property
  def num_joints(self) -> int:
    return len(self.names)

  def flip_permutation(self) -> np.ndarray:
    """perm[k] is joint k's mirror joint."""
    return flip_permutation(self.num_joints, self.flip_pairs)

  def order(self) -> tuple[int, ...]:
    """The bottom-up grouping order of the joints."""
    return self.grouping_order or tuple(range(self.num_joints))

  def validate(self, where: str = 'config.keypoints') -> 'KeypointSet':
    """Returns the set, or raises ``errors.ConfigError`` naming the field that is wrong."""
    k = self.num_joints
    if k == 0 or len(set(self.names)) != k:
      raise errors.ConfigError(f'{where}.names must be {k or "some"} distinct joint names; got '
                               f'{self.names}')
    lengths = {'sigmas': self.sigmas, 'joint_weights': self.joint_weights,
               'grouping_order': self.grouping_order}
    for field, values in lengths.items():
      if values and len(values) != k:
        raise errors.ConfigError(f'{where}.{field} has {len(values)} values; expected one per '
                                 f'joint of {where}.names ({k})')
    if not self.sigmas:
      raise errors.ConfigError(f'{where}.sigmas is empty: OKS needs one sigma per joint ({k})')
    joints = [j for pair in self.flip_pairs for j in pair]
    checks = {'flip_pairs': joints, 'skeleton': [j for limb in self.skeleton for j in limb],
              'upper_body_ids': list(self.upper_body_ids), 'grouping_order':
              list(self.grouping_order)}
    for field, values in checks.items():
      bad = [j for j in values if not 0 <= j < k]
      if bad:
        raise errors.ConfigError(f'{where}.{field} names joint(s) {bad}, out of range for {k} '
                                 f'joints (0..{k - 1})')
    if len(set(joints)) != len(joints):
      raise errors.ConfigError(f'{where}.flip_pairs uses a joint twice: {self.flip_pairs}')
    if self.grouping_order and sorted(self.grouping_order) != list(range(k)):
      raise errors.ConfigError(f'{where}.grouping_order must hold each joint once; got '
                               f'{self.grouping_order}')
    return self

  def to_dict(self) -> dict[str, Any]:
    """The set as plain values, for a config section."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


PRESETS: dict[str, KeypointSet] = {
    'coco': KeypointSet(
        'coco', COCO_KEYPOINT_NAMES, COCO_FLIP_PAIRS, COCO_SKELETON,
        tuple(float(s) for s in COCO_OKS_SIGMAS), COCO_UPPER_BODY_IDS,
        grouping_order=COCO_GROUPING_ORDER),
    'mpii': KeypointSet(
        'mpii', MPII_KEYPOINT_NAMES, MPII_FLIP_PAIRS, MPII_SKELETON, MPII_OKS_SIGMAS,
        MPII_UPPER_BODY_IDS),
    'crowdpose': KeypointSet(
        'crowdpose', CROWDPOSE_KEYPOINT_NAMES, CROWDPOSE_FLIP_PAIRS, CROWDPOSE_SKELETON,
        CROWDPOSE_OKS_SIGMAS, (0, 1, 2, 3, 4, 5, 12, 13),
        grouping_order=COCO_GROUPING_ORDER[:14]),
    'posetrack18': KeypointSet(
        'posetrack18', POSETRACK18_KEYPOINT_NAMES, POSETRACK18_FLIP_PAIRS, POSETRACK18_SKELETON,
        tuple(float(s) for s in COCO_OKS_SIGMAS), COCO_UPPER_BODY_IDS,
        grouping_order=COCO_GROUPING_ORDER),
}


def preset(name: str) -> KeypointSet:
  """The keypoint set of a dataset by name: one of ``PRESETS``."""
  if name not in PRESETS:
    raise errors.ConfigError(f'no keypoint preset {name!r}; expected one of {sorted(PRESETS)} '
                             f'or a set written in the config (config.keypoints)')
  return PRESETS[name]


def _tuple(value: Any) -> tuple:
  if isinstance(value, (list, tuple)):
    return tuple(_tuple(v) for v in value)
  return value


def from_mapping(section: Mapping[str, Any], where: str = 'config.keypoints') -> KeypointSet:
  """The validated set of a config section holding the fields of ``KeypointSet``."""
  fields = {f.name for f in dataclasses.fields(KeypointSet)}
  unknown = sorted(set(section) - fields)
  missing = sorted(f.name for f in dataclasses.fields(KeypointSet)
                   if f.name not in section and f.default is dataclasses.MISSING)
  if unknown or missing:
    raise errors.ConfigError(f'{where} must hold the fields {sorted(fields)}: '
                             f'{"unknown " + str(unknown) if unknown else ""}'
                             f'{" " if unknown and missing else ""}'
                             f'{"missing " + str(missing) if missing else ""}')
  values = {k: _tuple(v) for k, v in section.items()}
  values['sigmas'] = tuple(float(s) for s in values['sigmas'])
  values['joint_weights'] = tuple(float(w) for w in values.get('joint_weights', ()))
  return KeypointSet(**values).validate(where)


def from_config(config: Any) -> KeypointSet:
  """The keypoint set of a whole config; its joint count must equal ``model.num_joints``."""
  if 'keypoints' not in config:
    raise errors.ConfigError('the config has no keypoints section (config.keypoints): set it '
                             f'to a preset of hrnet_jax.keypoints ({sorted(PRESETS)}) or your '
                             f'own set')
  keypoint_set = from_mapping(dict(config.keypoints))
  if keypoint_set.num_joints != config.model.num_joints:
    raise errors.ConfigError(
        f'config.keypoints ({keypoint_set.name!r}) has {keypoint_set.num_joints} joints but '
        f'config.model.num_joints is {config.model.num_joints}: set both to the same count')
  return keypoint_set


def flip_permutation(num_joints: int, flip_pairs: Sequence[Sequence[int]]) -> np.ndarray:
  """Returns the joint permutation of a horizontal flip: perm[k] is k's mirror joint."""
  perm = np.arange(num_joints)
  for a, b in flip_pairs:
    if not (0 <= a < num_joints and 0 <= b < num_joints):
      raise ValueError(f'flip pair {(a, b)} is out of range for {num_joints} joints')
    perm[a], perm[b] = b, a
  return perm
