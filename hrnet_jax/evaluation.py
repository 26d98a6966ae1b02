"""Evaluation maths of the official code: OKS NMS, soft OKS NMS and person rescoring.

Keypoints are (M, K, 3) arrays of x, y, score; the orders and tie-breaking are the official
numpy ones (``argsort()[::-1]`` of the scores).
"""

from __future__ import annotations

import numpy as np

from hrnet_jax import keypoints as kp

SOFT_NMS_MAX_DETECTIONS = 20  # the official soft_oks_nms keeps at most 20 people per image


def oks_iou(reference, others, reference_area: float, other_areas, sigmas=None,
            in_vis_thre: float | None = None) -> np.ndarray:
  """OKS of one person's keypoints (K, 3) with each of ``others`` (M, K, 3), as the official.

  With ``in_vis_thre`` only the joints of each other person scoring above it count: the
  official ``list(vg > t) and list(vd > t)`` evaluates to the second list.
  """
  sigmas = kp.COCO_OKS_SIGMAS if sigmas is None else np.asarray(sigmas)
  variances = (sigmas * 2) ** 2
  reference, others = np.asarray(reference, np.float64), np.asarray(others, np.float64)
  dx = others[..., 0] - reference[None, :, 0]
  dy = others[..., 1] - reference[None, :, 1]
  scale = (reference_area + np.asarray(other_areas, np.float64)) / 2
  e = (dx**2 + dy**2) / variances / (scale[:, None] + np.spacing(1)) / 2
  used = (others[..., 2] > in_vis_thre if in_vis_thre is not None
          else np.ones(e.shape, bool))
  count = used.sum(axis=1)
  total = np.where(used, np.exp(-e), 0.0).sum(axis=1)
  return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def oks_nms(keypoints, scores, areas, threshold: float, in_vis_thre: float | None = None,
            sigmas=None) -> list[int]:
  """The official ``oks_nms``: indices kept, highest score first."""
  keypoints, scores, areas = (np.asarray(x, np.float64) for x in (keypoints, scores, areas))
  order = scores.argsort()[::-1]
  keep = []
  while order.size > 0:
    i = order[0]
    keep.append(int(i))
    overlap = oks_iou(keypoints[i], keypoints[order[1:]], areas[i], areas[order[1:]], sigmas,
                      in_vis_thre)
    order = order[np.where(overlap <= threshold)[0] + 1]
  return keep


def soft_oks_nms(keypoints, scores, areas, threshold: float, in_vis_thre: float | None = None,
                 sigmas=None) -> list[int]:
  """The official ``soft_oks_nms``: Gaussian rescoring exp(-oks^2 / threshold), <= 20 kept."""
  keypoints, scores, areas = (np.asarray(x, np.float64) for x in (keypoints, scores, areas))
  order = scores.argsort()[::-1]
  scores = scores[order]
  keep = []
  while order.size > 0 and len(keep) < SOFT_NMS_MAX_DETECTIONS:
    i = order[0]
    overlap = oks_iou(keypoints[i], keypoints[order[1:]], areas[i], areas[order[1:]], sigmas,
                      in_vis_thre)
    order = order[1:]
    scores = scores[1:] * np.exp(-overlap**2 / threshold)
    resort = scores.argsort()[::-1]
    order, scores = order[resort], scores[resort]
    keep.append(int(i))
  return keep


def rescore(box_scores, keypoint_scores, in_vis_thre: float) -> np.ndarray:
  """The official person score: box score x mean of the keypoint scores above the threshold.

  A person with no keypoint above it scores 0 (the official kpt_score stays 0).
  """
  keypoint_scores = np.asarray(keypoint_scores, np.float64)
  used = keypoint_scores > in_vis_thre
  count = used.sum(axis=-1)
  mean = np.where(count > 0, np.where(used, keypoint_scores, 0).sum(axis=-1) /
                  np.maximum(count, 1), 0.0)
  return mean * np.asarray(box_scores, np.float64)
