"""COCO evaluation as the official code: OKS NMS, soft OKS NMS, rescoring, COCOeval.

Keypoints are (M, K, 3) arrays of x, y, score; the orders and tie-breaking are the official
numpy ones (``argsort()[::-1]`` of the scores).
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hrnet_jax import errors
from hrnet_jax import keypoints as kp
from hrnet_jax.keypoints import PERSON_CATEGORY

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


# ---------------------------------------------------------------------------------------------
# The official ``COCODataset.evaluate``: rescoring and OKS NMS per image, COCO results, COCOeval.

METRIC_NAMES = ('AP', 'AP50', 'AP75', 'APM', 'APL', 'AR', 'AR50', 'AR75', 'ARM', 'ARL')


def keypoint_results(keypoints, box_scores, image_ids, centers, scales, *,
                     in_vis_thre: float = 0.2, oks_thre: float = 0.9, soft_nms: bool = False,
                     sigmas=None, pixel_std: float = kp.PIXEL_STD,
                     category_id: int = PERSON_CATEGORY) -> list[dict]:
  """COCO keypoint results of top-down predictions, as the official ``evaluate``.

  ``keypoints`` (N, K, 3) are image x, y and maxval. Each person is rescored (``rescore``),
  then OKS NMS runs per image (first-seen image order) on the box areas ``prod(scale * 200)``
  without a visibility threshold, as the official call. An image whose NMS keeps nobody keeps
  everyone.
  """
  keypoints = np.asarray(keypoints, np.float64)
  scales = np.asarray(scales, np.float64)
  centers = np.asarray(centers, np.float64)
  image_ids = np.asarray(image_ids).astype(np.int64)
  scores = rescore(box_scores, keypoints[..., 2], in_vis_thre)
  areas = np.prod(scales * pixel_std, axis=1)
  nms = soft_oks_nms if soft_nms else oks_nms
  rows: dict[int, list[int]] = {}
  for i, image_id in enumerate(image_ids.tolist()):
    rows.setdefault(image_id, []).append(i)
  results = []
  for image_id, members in rows.items():
    members = np.asarray(members)
    keep = nms(keypoints[members], scores[members], areas[members], oks_thre, sigmas=sigmas)
    for i in (members[keep] if keep else members):
      results.append({'image_id': image_id, 'category_id': category_id,
                      'keypoints': [float(v) for v in keypoints[i].reshape(-1)],
                      'score': float(scores[i]),
                      'center': [float(v) for v in centers[i]],
                      'scale': [float(v) for v in scales[i]]})
  return results


def read_ground_truth(ground_truth: dict | str) -> tuple[dict, str]:
  """The annotation dict (given, or read from its file) and how messages name it."""
  if not isinstance(ground_truth, str):
    return ground_truth, 'the ground truth'
  with open(ground_truth) as f:
    return json.load(f), ground_truth


def coco_of(dataset: dict) -> COCO:
  """A pycocotools ``COCO`` of an annotation dict, built without its prints."""
  coco = COCO()
  coco.dataset = dataset
  with contextlib.redirect_stdout(io.StringIO()):
    coco.createIndex()
  return coco


def check_results(results: list[dict], dataset: dict, source: str, where: str) -> None:
  """Raises ``errors.UserError`` for no results or results of images not in ``dataset``."""
  if not results:
    raise errors.UserError(f'{source}: no keypoint results to evaluate')
  unknown = sorted({r['image_id'] for r in results} - {i['id'] for i in dataset['images']})
  if unknown:
    raise errors.UserError(f'{source}: {len(unknown)} image id(s) are not in {where}: '
                           f'{unknown[:10]}{" ..." if len(unknown) > 10 else ""}')


def coco_keypoint_eval(ground_truth: dict | str, results: list[dict] | str,
                       sigmas=None) -> tuple[dict[str, float], str]:
  """pycocotools COCOeval (iouType 'keypoints') of results (a list or a results file).

  ``ground_truth`` is the annotation dict or file. Returns the ten summary numbers under
  ``METRIC_NAMES`` and the printed table. Raises ``errors.UserError`` for an empty result list
  or image ids absent from the annotations.
  """
  source = results if isinstance(results, str) else 'the results'
  if isinstance(results, str):
    with open(results) as f:
      results = json.load(f)
  dataset, where = read_ground_truth(ground_truth)
  check_results(results, dataset, source, where)
  # A missing area becomes the box's w x h, as pycocotools' loadRes sizes boxes (PoseTrack18
  # has none).
  ground_truth = coco_of(dict(dataset, annotations=[
      a if 'area' in a or 'bbox' not in a else
      dict(a, area=float(a['bbox'][2]) * float(a['bbox'][3])) for a in dataset['annotations']]))
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    detections = ground_truth.loadRes(results)
    coco_eval = COCOeval(ground_truth, detections, 'keypoints')
    coco_eval.params.useSegm = None
    if sigmas is not None:
      coco_eval.params.kpt_oks_sigmas = np.asarray(sigmas)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
  table = '\n'.join(line for line in printed.getvalue().splitlines()
                    if line.startswith(' Average'))
  return dict(zip(METRIC_NAMES, (float(v) for v in coco_eval.stats))), table
