"""MPII PCKh as the official evaluation (``MPIIDataset.evaluate``), per joint group.

Coordinates are 0-based pixels. The official code adds 1 to its predictions and compares
them with the 1-based ``pos_gt_src`` of ``gt_valid.mat``; ``load_ground_truth_mat`` returns
that ground truth 0-based, so the differences are the same.
"""

from __future__ import annotations

import numpy as np

from hrnet_jax import errors
from hrnet_jax import keypoints as kp

HEAD_SIZE_FACTOR = 0.6  # the official SC_BIAS: PCKh uses 0.6 x the head box diagonal
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ('Head', ('head_top',)),
    ('Shoulder', ('left_shoulder', 'right_shoulder')),
    ('Elbow', ('left_elbow', 'right_elbow')),
    ('Wrist', ('left_wrist', 'right_wrist')),
    ('Hip', ('left_hip', 'right_hip')),
    ('Knee', ('left_knee', 'right_knee')),
    ('Ankle', ('left_ankle', 'right_ankle')),
)
_EXCLUDED = ('pelvis', 'thorax')  # not in the official mean
OFFICIAL_MEAN_AT_0_1 = 'Mean@0.1 (official, threshold 0.11)'


def pckh_per_joint(predictions, ground_truth, visible, headboxes, threshold: float):
  """Per-joint PCKh in percent (16,) and the labelled count per joint (16,).

  predictions, ground_truth: (N, 16, 2); visible: (N, 16) (1 = labelled); headboxes:
  (N, 2, 2) with the two corners of each head box.
  """
  predictions, ground_truth = (np.asarray(x, np.float64) for x in (predictions, ground_truth))
  visible = np.asarray(visible, np.float64)
  head = np.linalg.norm(np.asarray(headboxes, np.float64)[:, 1] -
                        np.asarray(headboxes, np.float64)[:, 0], axis=-1) * HEAD_SIZE_FACTOR
  error = np.linalg.norm(predictions - ground_truth, axis=-1) / head[:, None] * visible
  count = visible.sum(axis=0)
  hits = ((error <= threshold) * visible).sum(axis=0)
  with np.errstate(invalid='ignore', divide='ignore'):
    return 100.0 * hits / count, count


def pckh_table(predictions, ground_truth, visible, headboxes,
               thresholds: tuple[float, ...] = (0.5, 0.1)) -> dict[str, float]:
  """PCKh per joint group and the official weighted mean, at each threshold.

  Keys: 'Head', 'Shoulder', ..., 'Ankle', 'Mean' at the first threshold (the official
  table), then the same names with '@0.1' etc. for the others.
  """
  names = kp.MPII_KEYPOINT_NAMES
  index = {n: i for i, n in enumerate(names)}
  table = {}
  for t, threshold in enumerate(thresholds):
    pck, count = pckh_per_joint(predictions, ground_truth, visible, headboxes, threshold)
    suffix = '' if t == 0 else f'@{threshold:g}'
    for group, joints in GROUPS:
      table[group + suffix] = float(np.mean([pck[index[j]] for j in joints]))
    table['Mean' + suffix] = _weighted_mean(pck, count)
  # What the official table prints as 'Mean@0.1' is pckAll[11] of arange(0, 0.51, 0.01),
  # i.e. the threshold 0.11; kept under its own name to compare with published tables.
  table[OFFICIAL_MEAN_AT_0_1] = _weighted_mean(*pckh_per_joint(
      predictions, ground_truth, visible, headboxes, 0.11))
  return table


def _weighted_mean(pck: np.ndarray, count: np.ndarray) -> float:
  """The official mean: joints weighted by their labelled counts, pelvis and thorax left out."""
  used = np.array([n not in _EXCLUDED for n in kp.MPII_KEYPOINT_NAMES])
  return float(np.sum(pck[used] * count[used] / count[used].sum()))


def load_ground_truth_mat(path: str) -> dict[str, np.ndarray]:
  """The official ``gt_valid.mat``: joints (N, 16, 2) 0-based, visible (N, 16), headboxes.

  Joints are reordered from the file's ``dataset_joints`` names into ``MPII_KEYPOINT_NAMES``.
  """
  from scipy.io import loadmat
  try:
    mat = loadmat(path)
  except (OSError, ValueError) as e:
    raise errors.UserError(f'{path}: cannot read the MPII ground truth (.mat): {e}') from e
  for key in ('dataset_joints', 'jnt_missing', 'pos_gt_src', 'headboxes_src'):
    if key not in mat:
      raise errors.ConfigError(f'{path} has no {key!r}: expected the official gt_valid.mat')
  file_names = [str(np.squeeze(n)) for n in np.squeeze(mat['dataset_joints'])]
  names = {'head': 'head_top', 'neck': 'upper_neck', 'lsho': 'left_shoulder',
           'rsho': 'right_shoulder', 'lelb': 'left_elbow', 'relb': 'right_elbow',
           'lwri': 'left_wrist', 'rwri': 'right_wrist', 'lhip': 'left_hip',
           'rhip': 'right_hip', 'lkne': 'left_knee', 'rkne': 'right_knee',
           'lank': 'left_ankle', 'rank': 'right_ankle', 'pelv': 'pelvis', 'thor': 'thorax'}
  order = [file_names.index(short) for short in
           sorted(names, key=lambda s: kp.MPII_KEYPOINT_NAMES.index(names[s]))]
  return {'joints': np.transpose(mat['pos_gt_src'], (2, 0, 1))[:, order] - 1.0,
          'visible': 1 - np.transpose(mat['jnt_missing'], (1, 0))[:, order],
          'headboxes': np.transpose(mat['headboxes_src'], (2, 0, 1))}


def ground_truth_of_records(annotations: list[dict]) -> dict[str, np.ndarray]:
  """joints (N, 16, 2) 0-based, visible (N, 16) and headboxes (N, 2, 2) of MPII annotations in
  COCO form (``mpii_convert.to_coco``), each with a ``headbox`` [x1, y1, x2, y2]."""
  missing = [a.get('id') for a in annotations if 'headbox' not in a]
  if missing:
    raise errors.ConfigError(
        f'{len(missing)} MPII record(s) have no "headbox" (e.g. annotation {missing[0]}): PCKh '
        f'needs head boxes; set the evaluator\'s headbox_file to the official gt_valid.mat')
  keypoints = np.array([a['keypoints'] for a in annotations], np.float64).reshape(
      len(annotations), -1, 3)
  return {'joints': keypoints[..., :2], 'visible': (keypoints[..., 2] > 0).astype(np.float64),
          'headboxes': np.array([a['headbox'] for a in annotations],
                                np.float64).reshape(-1, 2, 2)}


def format_table(metrics: dict[str, float]) -> str:
  """The PCKh table as the official evaluation prints it: one column per joint group."""
  names = [g for g, _ in GROUPS] + ['Mean']
  rows = [('PCKh@0.5', ''), ('PCKh@0.1', '@0.1')]
  lines = ['| Arch | ' + ' | '.join(names) + ' |', '|---' * (len(names) + 1) + '|']
  for label, suffix in rows:
    values = [metrics.get(n + suffix, float('nan')) for n in names]
    lines.append(f'| {label} | ' + ' | '.join(f'{v:.3f}' for v in values) + ' |')
  return '\n'.join(lines)
