"""Associative-embedding grouping of bottom-up heatmaps into people: the official HeatmapParser.

For one image, ``parse`` takes joint heatmaps and tag maps and returns people in the order
the official ``HeatmapParser.parse`` of HigherHRNet returns them, with the same coordinates
and scores:

1. max-pool NMS (kernel 5) of the heatmaps; the top ``max_num_people`` peaks of every joint;
2. joints in the official order (head, shoulders, hips, then the limbs): each joint's peaks
   above the detection threshold are matched to the people found so far by the Hungarian
   algorithm on ``round(tag distance) * 100 - score``; a peak whose tag is further than
   ``tag_threshold`` from its match starts a new person. As officially, people are keyed by
   their first tag value, so two people whose first tags are equal are one person;
3. ``adjust``: +0.5 and a quarter-pixel step towards the higher neighbour;
4. person score = mean joint score (before refinement);
5. ``refine``: each missing joint is taken at the best position of ``heatmap - round(tag
   distance to the person's mean tag)``.
"""

from __future__ import annotations

from typing import Sequence

import munkres
import numpy as np
import scipy.ndimage

from hrnet_jax import keypoints as kp

COCO_JOINT_ORDER = kp.COCO_GROUPING_ORDER


def joint_order(num_joints: int) -> tuple[int, ...]:
  """The default grouping order: the official COCO one for 17 joints, index order otherwise
  (callers with a keypoint set pass its ``order()``)."""
  return COCO_JOINT_ORDER if num_joints == len(COCO_JOINT_ORDER) else tuple(range(num_joints))


def heatmap_nms(det: np.ndarray, kernel: int = 5) -> np.ndarray:
  """Keeps the values of (K, H, W) heatmaps that equal their kernel x kernel maximum."""
  pooled = scipy.ndimage.maximum_filter(det, size=(1, kernel, kernel), mode='constant',
                                        cval=-np.inf)
  return det * (pooled == det)


def _adjust_heap(values: list, indices: list, hole: int, length: int, value, index) -> None:
  """libstdc++'s ``__adjust_heap`` then ``__push_heap`` with comp(a, b) = a > b (a min-heap)."""
  top, child = hole, hole
  while child < (length - 1) // 2:
    child = 2 * (child + 1)
    if values[child] > values[child - 1]:
      child -= 1
    values[hole], indices[hole] = values[child], indices[child]
    hole = child
  if length % 2 == 0 and child == (length - 2) // 2:
    child = 2 * (child + 1)
    values[hole], indices[hole] = values[child - 1], indices[child - 1]
    hole = child - 1
  parent = (hole - 1) // 2
  while hole > top and values[parent] > value:
    values[hole], indices[hole] = values[parent], indices[parent]
    hole, parent = parent, (parent - 1) // 2
  values[hole], indices[hole] = value, index


def torch_topk_indices(values: np.ndarray, k: int) -> np.ndarray:
  """The indices ``torch.topk(values, k)`` returns on the CPU, ties in torch's order.

  For ``64 k <= n``, torch takes ``std::partial_sort`` (a heap select, then a heap sort) and
  equal values come out in the order of that heap, which the official grouping inherits; it
  is replayed here, visiting only the values that can enter the heap. Smaller maps (under
  ~44x44 for k = 30) go through ``std::nth_element``; there ties are taken in index order.
  """
  n = values.shape[0]
  k = min(k, n)
  if k * 64 > n:
    return np.argsort(-values, kind='stable')[:k]
  heap_v, heap_i = values[:k].tolist(), list(range(k))
  for parent in range((k - 2) // 2, -1, -1):  # __make_heap
    _adjust_heap(heap_v, heap_i, parent, k, heap_v[parent], heap_i[parent])
  for i in (np.flatnonzero(values[k:] > min(heap_v)) + k).tolist():  # __heap_select
    if values[i] > heap_v[0]:
      _adjust_heap(heap_v, heap_i, 0, k, float(values[i]), i)
  for last in range(k - 1, 0, -1):  # __sort_heap
    value, index = heap_v[last], heap_i[last]
    heap_v[last], heap_i[last] = heap_v[0], heap_i[0]
    _adjust_heap(heap_v, heap_i, 0, last, value, index)
  return np.array(heap_i, np.int64)


def top_k(det: np.ndarray, tag: np.ndarray, k: int, nms_kernel: int = 5,
          nms_det: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The k highest NMS peaks of every joint: tags (K, k, L), locations (K, k, 2) as x, y, scores.

  ``nms_det`` is ``heatmap_nms(det, nms_kernel)`` when already computed (on a device).
  """
  num_joints, h, w = det.shape
  if nms_det is None:
    nms_det = heatmap_nms(det, nms_kernel)
  flat = nms_det.reshape(num_joints, h * w)
  ind = np.stack([torch_topk_indices(row, k) for row in flat])
  val_k = np.take_along_axis(flat, ind, axis=1)
  tag_k = np.take_along_axis(tag.reshape(num_joints, h * w, -1), ind[:, :, None], axis=1)
  loc_k = np.stack([ind % w, ind // w], axis=2)
  return tag_k, loc_k, val_k


def match_by_tag(tag_k: np.ndarray, loc_k: np.ndarray, val_k: np.ndarray, *,
                 order: Sequence[int], max_num_people: int, detection_threshold: float,
                 tag_threshold: float, use_detection_val: bool,
                 ignore_too_much: bool) -> np.ndarray:
  """Groups the peaks into people (P, K, 3 + L): x, y, score, tags; the official match_by_tag."""
  num_joints, _, dim = tag_k.shape
  default = np.zeros((num_joints, 3 + dim))
  joint_dict: dict[float, np.ndarray] = {}  # first tag value -> person; insertion ordered
  tag_dict: dict[float, list[np.ndarray]] = {}
  for i, idx in enumerate(order):
    joints = np.concatenate([loc_k[idx], val_k[idx, :, None], tag_k[idx]], axis=1)
    mask = joints[:, 2] > detection_threshold
    tags, joints = tag_k[idx][mask], joints[mask]
    if joints.shape[0] == 0:
      continue
    if i == 0 or not joint_dict:
      for tag, joint in zip(tags, joints):
        key = tag[0]
        joint_dict.setdefault(key, np.copy(default))[idx] = joint
        tag_dict[key] = [tag]
      continue
    grouped_keys = list(joint_dict)[:max_num_people]
    if ignore_too_much and len(grouped_keys) == max_num_people:
      continue
    grouped_tags = np.array([np.mean(tag_dict[key], axis=0) for key in grouped_keys])
    distance = np.linalg.norm(joints[:, None, 3:] - grouped_tags[None], ord=2, axis=2)
    cost = np.round(distance) * 100 - joints[:, 2:3] if use_detection_val else distance
    num_added, num_grouped = cost.shape
    if num_added > num_grouped:
      cost = np.concatenate([cost, np.full((num_added, num_added - num_grouped), 1e10)], axis=1)
    for row, col in munkres.Munkres().compute(cost):
      if row < num_added and col < num_grouped and distance[row, col] < tag_threshold:
        key = grouped_keys[col]
        joint_dict[key][idx] = joints[row]
        tag_dict[key].append(tags[row])
      else:
        key = tags[row][0]
        joint_dict.setdefault(key, np.copy(default))[idx] = joints[row]
        tag_dict[key] = [tags[row]]
  if not joint_dict:
    return np.zeros((0, num_joints, 3 + dim), np.float32)
  return np.array(list(joint_dict.values())).astype(np.float32)


def _quarter_step(heatmap: np.ndarray, x: int, y: int) -> tuple[float, float]:
  """+-0.25 in x and y towards the higher neighbour (ties step back), as the official."""
  h, w = heatmap.shape
  dx = 0.25 if heatmap[y, min(x + 1, w - 1)] > heatmap[y, max(x - 1, 0)] else -0.25
  dy = 0.25 if heatmap[min(y + 1, h - 1), x] > heatmap[max(y - 1, 0), x] else -0.25
  return dx, dy


def adjust_people(people: np.ndarray, det: np.ndarray) -> np.ndarray:
  """Moves detected joints to pixel centres (+0.5) plus a quarter step; in place, float32."""
  for person in people:
    for joint_id, joint in enumerate(person):
      if joint[2] > 0:
        x, y = joint[0], joint[1]
        dx, dy = _quarter_step(det[joint_id], int(x), int(y))
        person[joint_id, 0:2] = (x + np.float32(dx) + np.float32(0.5),
                                 y + np.float32(dy) + np.float32(0.5))
  return people


def refine_person(det: np.ndarray, tag: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
  """Fills a person's missing joints at the best ``heatmap - round(tag distance)``; in place."""
  detected = [tag[i, y, x] for i, (x, y) in enumerate(keypoints[:, :2].astype(np.int32))
              if keypoints[i, 2] > 0]
  prev_tag = np.mean(detected, axis=0)
  for i in np.flatnonzero(keypoints[:, 2] == 0):
    heatmap = det[i]
    distance = ((tag[i] - prev_tag) ** 2).sum(axis=2) ** 0.5
    y, x = np.unravel_index(np.argmax(heatmap - np.round(distance)), heatmap.shape)
    val = heatmap[y, x]
    if val > 0:
      dx, dy = _quarter_step(heatmap, x, y)
      keypoints[i, :3] = (x + 0.5 + dx, y + 0.5 + dy, val)
  return keypoints


def parse(det: np.ndarray, tag: np.ndarray, *, max_num_people: int = 30,
          detection_threshold: float = 0.1, tag_threshold: float = 1.0,
          use_detection_val: bool = True, ignore_too_much: bool = False, nms_kernel: int = 5,
          adjust: bool = True, refine: bool = True,
          order: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Groups one image's det (H, W, K) and tag (H, W, K, L) maps into people.

  Returns people (P, K, 3 + L) with x, y (heatmap pixels), detection score and the L tag
  values, in the official order, and their scores (P,): the mean joint score before ``refine``.
  """
  det = np.asarray(det, np.float32)
  tag = np.asarray(tag, np.float32)
  if tag.ndim == 3:
    tag = tag[..., None]
  if det.ndim != 3 or tag.shape[:3] != det.shape:
    raise ValueError(f'parse takes det (H, W, K) and tag (H, W, K, L) of the same H, W, K; '
                     f'got det {det.shape} and tag {tag.shape}')
  return parse_joint_major(
      np.ascontiguousarray(det.transpose(2, 0, 1)), np.ascontiguousarray(tag.transpose(2, 0, 1, 3)),
      max_num_people=max_num_people, detection_threshold=detection_threshold,
      tag_threshold=tag_threshold, use_detection_val=use_detection_val,
      ignore_too_much=ignore_too_much, nms_kernel=nms_kernel, adjust=adjust, refine=refine,
      order=order)


def parse_joint_major(det: np.ndarray, tag: np.ndarray, *, nms_det: np.ndarray | None = None,
                      max_num_people: int = 30, detection_threshold: float = 0.1,
                      tag_threshold: float = 1.0, use_detection_val: bool = True,
                      ignore_too_much: bool = False, nms_kernel: int = 5, adjust: bool = True,
                      refine: bool = True,
                      order: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """``parse`` of float32 maps in the official layout: det (K, H, W), tag (K, H, W, L).

  ``nms_det`` is ``heatmap_nms(det, nms_kernel)`` when a device computed it already;
  ``order`` is the grouping order of the joints (``joint_order`` by default).
  """
  people = match_by_tag(*top_k(det, tag, max_num_people, nms_kernel, nms_det),
                        order=order or joint_order(det.shape[0]), max_num_people=max_num_people,
                        detection_threshold=detection_threshold, tag_threshold=tag_threshold,
                        use_detection_val=use_detection_val, ignore_too_much=ignore_too_much)
  if adjust:
    adjust_people(people, det)
  scores = people[:, :, 2].mean(axis=1) if len(people) else np.zeros((0,), np.float32)
  if refine:
    for person in people:
      refine_person(det, tag, person)
  return people, scores
