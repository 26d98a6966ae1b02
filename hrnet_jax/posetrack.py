"""PoseTrack18's own pose metric: poseval's per-joint AP (PCKh 0.5) and the mAP table.

A port of the AP part of poseval (``eval_helpers.load_data_dir``, ``assignGTmulti``,
``evaluateAP.computeMetrics``, ``printTable``), with PoseTrack18 ground truth read as
``convert.py`` reads it; the tracking (MOTA) part is left out. Per frame, each prediction is
given to the ground-truth person it has the best PCKh with, and each person keeps the best of
the predictions given to it; the joints of kept predictions are true positives where within half
a head size (0.6 x the head box's diagonal), every other predicted joint is a false positive.
Frames of all videos are pooled into one AP per joint; the groups are means of joint APs.
"""

from __future__ import annotations

import json
import os
import warnings
from fractions import Fraction
from typing import Any, Sequence

import numpy as np

from hrnet_jax import errors

METRIC_NAMES = ('Head', 'Shoulder', 'Elbow', 'Wrist', 'Hip', 'Knee', 'Ankle', 'Total')

# poseval's 15 joints, in its order (``eval_helpers.Joint``, ``convert.POSETRACK18_LM_NAMES``);
# head_bottom is its "neck", the ears are dropped.
POSEVAL_JOINT_NAMES = (
    'right_ankle', 'right_knee', 'right_hip', 'left_hip', 'left_knee', 'left_ankle',
    'right_wrist', 'right_elbow', 'right_shoulder', 'left_shoulder', 'left_elbow',
    'left_wrist', 'head_bottom', 'nose', 'head_top')
# poseval's groups (``getCum``), as indices of POSEVAL_JOINT_NAMES; Total is its own mean.
_GROUPS = ([14, 12, 13], [8, 9], [7, 10], [6, 11], [2, 3], [1, 4], [0, 5])
DISTANCE_THRESHOLD = 0.5  # PCKh 0.5
HEAD_SIZE_FACTOR = 0.6  # head size: 0.6 x the diagonal of the head box
_NJ = len(POSEVAL_JOINT_NAMES)
# The joints of PoseTrack18 files (their category's "keypoints"), read when a file has none.
POSETRACK18_NAMES = (
    'nose', 'head_bottom', 'head_top', 'left_ear', 'right_ear', 'left_shoulder',
    'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip',
    'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle')


class _Frame:
  """One labelled frame: ground-truth people and predictions, as poseval's annorects."""

  def __init__(self, name: str, regions: list[np.ndarray]):
    self.name = name
    self.regions = regions
    self.gt: list[tuple[np.ndarray, np.ndarray, tuple]] = []  # (xy, has, head size)
    self.pr: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (xy, has, scores)


def _load(source: Any) -> tuple[list[tuple[str, dict]], str]:
  """(name, dict) of each ground-truth file: a dict, a json file or a folder of per-video files."""
  if isinstance(source, dict):
    return [('the ground truth', source)], 'the ground truth'
  path = os.fspath(source)
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path) if n.endswith('.json'))
    if not names:
      raise errors.UserError(f'{path}: no .json ground-truth files in this folder')
    paths = [os.path.join(path, n) for n in names]
  elif os.path.isfile(path):
    paths = [path]
  else:
    raise errors.MissingFileError(f'{path}: the PoseTrack18 ground truth does not exist')
  loaded = []
  for p in paths:
    with open(p) as f:
      try:
        loaded.append((p, json.load(f)))
      except json.JSONDecodeError as e:
        raise errors.UserError(f'{p}: not a json file ({e})') from None
  return loaded, path


def _joint_table(name: str, data: dict) -> list[int | None]:
  """poseval index of each joint of the file's category (its ``conversion_table``)."""
  categories = data.get('categories') or []
  names = (categories[0].get('keypoints') if categories else None) or POSETRACK18_NAMES
  missing = [n for n in POSEVAL_JOINT_NAMES if n not in names]
  if missing:
    raise errors.UserError(f'{name}: the category\'s keypoints lack {missing}')
  return [POSEVAL_JOINT_NAMES.index(n) if n in POSEVAL_JOINT_NAMES else None for n in names]


def _points(name: str, values: Any, table: list[int | None]) -> tuple[np.ndarray, ...]:
  """(xy (15, 2), present (15,), third values (15,)) of a flat keypoint list, as poseval.

  A joint is absent (``Person.to_old``) only where x, y and the third value are all 0.
  """
  try:
    values = np.asarray(values, np.float64).reshape(-1)
  except (TypeError, ValueError):
    raise errors.UserError(f'{name}: keypoints are not a list of numbers') from None
  if values.size != 3 * len(table):
    raise errors.UserError(f'{name}: {values.size} keypoint values, expected {3 * len(table)} '
                           f'({len(table)} joints x 3)')
  values = values.reshape(-1, 3)
  xy, has, third = np.zeros((_NJ, 2)), np.zeros(_NJ, bool), np.zeros(_NJ)
  for k, j in enumerate(table):
    if j is not None:
      x, y, v = values[k]
      xy[j] = x, y
      third[j] = v
      has[j] = not (x == 0 and y == 0 and v == 0)
  return xy, has, third


def _orientation(p1x, p1y, p2x, p2y, qx, qy) -> np.ndarray:
  """Sign of the turn p1 -> p2 -> q (1: left), exact where floats are too close to tell."""
  det = (p2x - p1x) * (qy - p1y) - (p2y - p1y) * (qx - p1x)
  bound = 1e-10 * (np.abs((p2x - p1x) * (qy - p1y)) + np.abs((p2y - p1y) * (qx - p1x)))
  sign = np.sign(det)
  if np.any(np.abs(det) <= bound):
    for idx in zip(*np.nonzero(np.abs(det) <= bound)):
      a, b, c, d, e, f = (Fraction(float(np.broadcast_to(t, det.shape)[idx]))
                          for t in (p1x, p1y, p2x, p2y, qx, qy))
      exact = (c - a) * (f - b) - (d - b) * (e - a)
      sign[idx] = (exact > 0) - (exact < 0)
  return sign


def _inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
  """Points (N, 2) strictly inside a closed polygon (E, 2): shapely's ``contains``.

  GEOS's ray-crossing count (``RayCrossingCounter``): odd crossings, not on the boundary.
  """
  if len(polygon) < 3 or len(points) == 0:
    return np.zeros(len(points), bool)
  p1x, p1y = polygon[:, 0], polygon[:, 1]
  p2x, p2y = np.roll(p1x, -1), np.roll(p1y, -1)
  qx, qy = points[:, :1], points[:, 1:]
  active = ~((p1x < qx) & (p2x < qx))
  vertex = active & (qx == p2x) & (qy == p2y)
  active &= ~vertex
  horizontal = (p1y == qy) & (p2y == qy)
  on_horizontal = active & horizontal & (np.minimum(p1x, p2x) <= qx) & (qx <= np.maximum(p1x, p2x))
  active &= ~horizontal
  crossing = active & (((p1y > qy) & (p2y <= qy)) | ((p2y > qy) & (p1y <= qy)))
  orient = np.zeros(crossing.shape)
  if crossing.any():
    orient = np.where(crossing, _orientation(p1x, p1y, p2x, p2y, qx, qy), 0)
  collinear = crossing & (orient == 0)
  orient = np.where(p2y < p1y, -orient, orient)
  count = (crossing & (orient > 0)).sum(axis=1)
  boundary = (vertex | on_horizontal | collinear).any(axis=1)
  return ~boundary & (count % 2 == 1)


def _ignore(people: list, regions: list[np.ndarray]) -> list:
  """Drop the joints inside any ignore region, then people left without joints."""
  kept = []
  for xy, has, extra in people:
    has = has.copy()
    for polygon in regions:
      has &= ~_inside(xy, polygon)
    if has.any():
      kept.append((xy, has, extra))
  return kept


def _frames(ground_truth: Any) -> tuple[list[_Frame], dict[Any, _Frame], list, str]:
  """Frames with ground-truth people, by image id, in poseval's order; the joint table."""
  files, source = _load(ground_truth)
  frames, by_id, table = [], {}, None
  for name, data in files:
    if not isinstance(data, dict) or 'images' not in data or 'annotations' not in data:
      raise errors.UserError(f'{name}: not a PoseTrack18 annotation file (needs "images" and '
                             '"annotations")')
    file_table = _joint_table(name, data)
    if table is not None and file_table != table:
      raise errors.UserError(f'{name}: its keypoints differ from the other files\'')
    table = file_table
    people: dict[Any, list[dict]] = {}
    for ann in data['annotations']:
      people.setdefault(ann.get('image_id'), []).append(ann)
    for image in data['images']:
      image_id = image.get('id')
      if image_id in by_id:
        raise errors.UserError(f'{name}: image id {image_id} is listed twice')
      video = os.path.basename(os.path.dirname(str(image.get('file_name', ''))))
      regions = [np.column_stack([np.asarray(x[:len(y)], np.float64),
                                  np.asarray(y[:len(x)], np.float64)])
                 for x, y in zip(image.get('ignore_regions_x') or [],
                                 image.get('ignore_regions_y') or [])]
      frame = _Frame(video, regions)
      by_id[image_id] = frame
      if not people.get(image_id):  # poseval's cleanupData: frames without people are dropped
        continue
      for ann in people[image_id]:
        what = f'{name}: annotation {ann.get("id")}'
        if 'keypoints' not in ann:
          raise errors.UserError(f'{what} has no "keypoints"')
        xy, has, _ = _points(what, ann['keypoints'], file_table)
        if not has.any():
          continue
        box = ann.get('bbox_head')
        if box is None or len(box) != 4:
          raise errors.UserError(f'{what} has labelled joints but no "bbox_head" [x, y, w, h]')
        x1, y1, w, h = box
        head = HEAD_SIZE_FACTOR * np.linalg.norm(np.subtract([x1 + w, y1 + h], [x1, y1]))
        frame.gt.append((xy, has, head))
      frame.gt = _ignore(frame.gt, regions)
      frames.append(frame)
  # poseval pools per-video files in the order it lists them: by video here (stable), so that
  # one merged file and its per-video files give the same order
  frames.sort(key=lambda f: f.name)
  return frames, by_id, table, source


def _assign(frame: _Frame, scores: list[list], labels: list[list]) -> np.ndarray:
  """poseval's ``assignGTmulti`` for one frame: appends scores and labels, returns GT counts."""
  has_gt = np.array([has for _, has, _ in frame.gt], bool).reshape(-1, _NJ)
  if not frame.pr:
    return has_gt.sum(axis=0)
  pr_xy = np.array([xy for xy, _, _ in frame.pr])
  has_pr = np.array([has for _, has, _ in frame.pr])
  score = np.array([s for _, _, s in frame.pr])
  matched = np.zeros((len(frame.pr), _NJ), bool)
  if frame.gt:
    gt_xy = np.array([xy for xy, _, _ in frame.gt])
    heads = np.array([head for _, _, head in frame.gt])
    both = has_pr[:, None, :] & has_gt[None, :, :]
    with np.errstate(divide='ignore', invalid='ignore'):
      dist = np.sqrt(((gt_xy[None] - pr_xy[:, None]) ** 2).sum(-1)) / heads[None, :, None]
    dist = np.where(both, dist, np.inf)
    # poseval's own arithmetic where it could fall on the other side of the threshold
    for p, g, j in zip(*np.nonzero(np.abs(dist - DISTANCE_THRESHOLD) < 1e-9)):
      dist[p, g, j] = np.linalg.norm(np.subtract([gt_xy[g, j, 0], gt_xy[g, j, 1]],
                                                 [pr_xy[p, j, 0], pr_xy[p, j, 1]])) / heads[g]
    match = dist <= DISTANCE_THRESHOLD
    n_gt = has_gt.sum(axis=1)
    pck = 1.0 * match.sum(axis=2)
    pck = np.where(n_gt[None] > 0, pck / np.maximum(n_gt, 1)[None], pck)
    best = np.argmax(pck, axis=1)  # each prediction keeps its best person only
    pck = np.where(np.arange(pck.shape[1])[None] == best[:, None], pck, 0)
    pr_to_gt = np.argmax(pck, axis=0)  # each person keeps its best prediction
    pr_to_gt[np.max(pck, axis=0) == 0] = -1
    for g, p in enumerate(pr_to_gt):
      if p >= 0:
        matched[p] = match[p, g]
  for p in range(len(frame.pr)):
    for j in np.nonzero(has_pr[p])[0]:
      scores[j].append(score[p, j])
      labels[j].append(matched[p, j])
  return has_gt.sum(axis=0)


def _voc_ap(rec: np.ndarray, prec: np.ndarray) -> float:
  """poseval's ``VOCap``: area under the interpolated precision-recall curve."""
  mpre = np.concatenate([[0.0], prec, [0.0]])
  mrec = np.concatenate([[0.0], rec, [1.0]])
  mpre = np.maximum.accumulate(mpre[::-1])[::-1]
  i = np.argwhere(~np.equal(mrec[1:], mrec[:-1])).flatten() + 1
  return np.sum(np.multiply(np.subtract(mrec[i], mrec[i - 1]), mpre[i]))


def posetrack_joint_ap(ground_truth: dict | str, results: list[dict]) -> np.ndarray:
  """poseval's ``apAll``: AP (percent) of its 15 joints (POSEVAL_JOINT_NAMES) and their mean."""
  frames, by_id, table, source = _frames(ground_truth)
  unknown = sorted({str(r.get('image_id')) if isinstance(r, dict) else repr(r) for r in results
                    if not isinstance(r, dict) or r.get('image_id') not in by_id})
  if unknown:
    raise errors.UserError(f'the results: {len(unknown)} image id(s) are not in {source}: '
                           f'{", ".join(unknown[:10])}{" ..." if len(unknown) > 10 else ""}')
  for n, result in enumerate(results):
    image_id = result['image_id']
    if 'keypoints' not in result:
      raise errors.UserError(f'result {n} (image {image_id}) has no "keypoints"')
    xy, has, third = _points(f'result {n} (image {image_id})', result['keypoints'], table)
    if has.any():
      by_id[image_id].pr.append((xy, has, third))
  scores: list[list] = [[] for _ in range(_NJ)]
  labels: list[list] = [[] for _ in range(_NJ)]
  n_gt = np.zeros(_NJ)
  for frame in frames:
    frame.pr = _ignore(frame.pr, frame.regions)
    n_gt += _assign(frame, scores, labels)
  ap = np.zeros((_NJ + 1, 1))
  for j in range(_NJ):
    if not scores[j]:
      continue  # poseval leaves 0 for a joint without predictions
    order = np.array(scores[j], np.float64).argsort()[::-1]
    npos = np.cumsum(np.asarray(labels[j], np.int8)[order] == 1)
    with np.errstate(divide='ignore', invalid='ignore'):
      recall = 1.0 * npos / np.float64(n_gt[j])
    precision = 1.0 * npos / np.arange(1, len(order) + 1)
    ap[j] = _voc_ap(recall, precision) * 100
  with warnings.catch_warnings():  # the mean of no joints is nan, as poseval's
    warnings.simplefilter('ignore', RuntimeWarning)
    idxs = np.argwhere(~np.isnan(ap[:_NJ, 0]))
    ap[_NJ] = ap[idxs, 0].mean()
  return ap[:, 0]


def posetrack_table(joint_ap: Sequence[float]) -> tuple[dict[str, float], str]:
  """The group metrics of poseval's joint APs and its printed table (``printTable``)."""
  vals = np.asarray(joint_ap, np.float64).reshape(-1, 1)
  with np.errstate(invalid='ignore'):
    cum = [vals[group, 0].mean() for group in _GROUPS] + [vals[_NJ, 0]]
  cells = ['{:>5}'.format('%1.1f' % v) for v in cum]
  header = '& Head & Shou & Elb  & Wri  & Hip  & Knee & Ankl & Total\\\\'
  row = '&' + ''.join(c + ' &' for c in cells[:-1]) + cells[-1] + ' \\\\'
  return dict(zip(METRIC_NAMES, (float(v) for v in cum))), f'{header}\n{row}\n'


def posetrack_map(ground_truth: dict | str, results: list[dict]) -> tuple[dict[str, float], str]:
  """poseval's PoseTrack18 AP: mAP (percent) of Head ... Ankle and Total, and its table.

  ``ground_truth`` is a PoseTrack18 annotation dict, a json file of one or more videos, or a
  folder of per-video json files (as poseval's ``--groundTruth``); ``results`` are COCO
  keypoint results whose third keypoint values are the joint scores (``score`` and
  ``track_id`` are not used). As poseval: a joint at (0, 0) with score 0 is no prediction (a
  ground-truth joint likewise with visibility 0); a frame counts when it has ground-truth people
  (``is_labeled`` is not read); joints strictly inside an ignore region are dropped from both
  sides; a joint nobody labels or predicts has AP 0 and counts in Total, one predicted but never
  labelled has AP nan, left out of Total but making its group nan.
  """
  return posetrack_table(posetrack_joint_ap(ground_truth, results))
