"""CrowdPose keypoint AP as its official tool, crowdpose-api, on top of pycocotools.

crowdpose-api (github.com/Jeff-sjtu/CrowdPose, ``crowdpose-api/PythonAPI/crowdposetools/``,
commit 86fe5e11e570cad02d553db52ec72545578cd1c8) is a fork of the COCO API. Its keypoint
``COCOeval`` differs from pycocotools' in these points only:

* the OKS scale of a ground-truth person is ``bbox w * h * 0.53``, never its ``area`` (CrowdPose
  annotations have none); the area ranges use the same number;
* the 14 OKS sigmas are written into ``computeOks`` (``CROWDPOSE_OKS_SIGMAS``);
* ``summarize`` prints and keeps AP, AP .5, AP .75, AR, AR .5, AR .75 at maxDets 20 (no
  medium/large lines; ``stats`` has 11 entries, 3 and 4 left 0); its AP lines pick their IoU
  threshold within 0.01 (the AR lines and pycocotools: exactly), the same ones here;
* then AP easy, medium and hard: the images of the annotation json split by ``crowdIndex``
  (< 0.2, < 0.8, the rest) and evaluated again each, the mean of the whole precision array of
  area 'all' (its -1 entries included, so -1 when a split has no image) rounded to 4 digits.
  They are printed as ``Average Recall (AR) ... type=  easy`` lines.

Everything else (which people count, ignore flags, matching, maxDets 20, IoU thresholds
.50:.05:.95, accumulation) is pycocotools' code, reused here.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hrnet_jax import errors, evaluation
from hrnet_jax import keypoints as kp

# The crowdpose-api's sigmas (cocoeval.py, COCOeval.computeOks, Jeff-sjtu/CrowdPose 86fe5e1),
# kept with the CrowdPose keypoint set.
CROWDPOSE_OKS_SIGMAS: np.ndarray = np.array(kp.CROWDPOSE_OKS_SIGMAS)

METRIC_NAMES = ('AP', 'AP50', 'AP75', 'AR', 'AR50', 'AR75', 'AP_easy', 'AP_medium', 'AP_hard')

AREA_FACTOR = 0.53  # a ground-truth person's area is its box's area times this
EASY_BELOW, HARD_FROM = 0.2, 0.8  # crowdIndex bounds of the easy and hard images
MAX_DETECTIONS = 20
_STAT_INDEX = (0, 1, 2, 5, 6, 7, 8, 9, 10)  # the tool's stats entries of METRIC_NAMES
_LINE = ' {:<18} {} @[ IoU={:<9} | %s={:>6s} | maxDets={:>3d} ] = {:0.3f}'


class _CrowdPoseEval(COCOeval):
  """pycocotools' keypoint COCOeval with crowdpose-api's sigmas and summary.

  The ground-truth annotations must carry crowdpose-api's areas (``_with_tool_areas``), which
  makes pycocotools' ``computeOks`` and ``evaluateImg`` compute what the tool's do.
  """

  def __init__(self, ground_truth: COCO, detections: COCO, sigmas: np.ndarray,
               splits: Sequence[list]):
    super().__init__(ground_truth, detections, 'keypoints')
    self.params.kpt_oks_sigmas = sigmas
    self.splits = splits

  def _summarize(self, ap: int, iou: float | None = None, label: str = 'all',
                 value: float | None = None) -> float:
    """The tool's ``_summarize`` at maxDets 20; ``ap=-1`` prints ``value`` as a crowd line."""
    p = self.params
    title = 'Average Precision' if ap == 1 else 'Average Recall'
    iou_text = (f'{p.iouThrs[0]:0.2f}:{p.iouThrs[-1]:0.2f}' if iou is None else f'{iou:0.2f}')
    if ap == -1:
      mean = value
    else:
      area = [i for i, name in enumerate(p.areaRngLbl) if name == label]
      count = [i for i, m in enumerate(p.maxDets) if m == MAX_DETECTIONS]
      if ap == 1:
        s = self.eval['precision']
        if iou is not None:
          s = s[np.where(abs(iou - p.iouThrs) < 0.01)[0]]
        s = s[:, :, :, area, count]
      else:
        s = self.eval['recall']
        if iou is not None:
          s = s[np.where(iou == p.iouThrs)[0]]
        s = s[:, :, area, count]
      mean = -1 if len(s[s > -1]) == 0 else np.mean(s[s > -1])
    line = _LINE % ('type' if ap == -1 else 'area')
    print(line.format(title, '(AR)' if ap != 1 else '(AP)', iou_text, label, MAX_DETECTIONS,
                      mean))
    return mean

  def split_ap(self, image_ids: list) -> float:
    """The tool's AP of some images: the mean precision of area 'all', -1s included."""
    self.params.imgIds = image_ids
    self.evaluate()
    self.accumulate()
    return round(np.mean(self.eval['precision'][:, :, :, 0, :]), 4)

  def summarize(self) -> None:
    """The tool's keypoint summary into ``self.stats`` (11 entries), printing its lines."""
    stats = np.zeros((11,))
    stats[0] = self._summarize(1)
    stats[1] = self._summarize(1, iou=.5)
    stats[2] = self._summarize(1, iou=.75)
    stats[5] = self._summarize(0)
    stats[6] = self._summarize(0, iou=.5)
    stats[7] = self._summarize(0, iou=.75)
    with contextlib.redirect_stdout(io.StringIO()):
      split_aps = [self.split_ap(ids) for ids in self.splits]
    for i, (label, value) in enumerate(zip(('easy', 'medium', 'hard'), split_aps)):
      stats[8 + i] = self._summarize(-1, label=label, value=value)
    self.stats = stats


def _with_tool_areas(ground_truth: dict) -> dict:
  """A copy of the ground truth whose annotations have crowdpose-api's area, w * h * 0.53."""
  annotations = [dict(a, area=a['bbox'][2] * a['bbox'][3] * AREA_FACTOR)
                 for a in ground_truth['annotations']]
  return dict(ground_truth, annotations=annotations)


def crowd_splits(images: Sequence[dict]) -> tuple[list, list, list]:
  """The ids of the easy, medium and hard images by ``crowdIndex``, as crowdpose-api splits."""
  easy, medium, hard = [], [], []
  for image in images:
    index = image['crowdIndex']
    (easy if index < EASY_BELOW else medium if index < HARD_FROM else hard).append(image['id'])
  return easy, medium, hard


def _ids(ids) -> str:
  ids = sorted(ids, key=str)
  return f'{ids[:10]}{" ..." if len(ids) > 10 else ""}'


def crowdpose_keypoint_eval(ground_truth: dict | str, results: list[dict],
                            sigmas: Sequence[float]) -> tuple[dict[str, float], str]:
  """crowdpose-api's keypoint evaluation: its numbers under METRIC_NAMES and its printed table.

  ``ground_truth`` is the CrowdPose json (a dict, left unchanged, or its path); ``results`` are
  COCO keypoint results (``image_id``, ``category_id``, flat K*3 ``keypoints``, ``score``), left
  unchanged. Raises ``errors.UserError`` for empty results, result image ids absent from the
  ground truth, images without ``crowdIndex`` or keypoints not of ``len(sigmas)`` joints.
  """
  ground_truth, name = evaluation.read_ground_truth(ground_truth)
  evaluation.check_results(results, ground_truth, 'the results', name)
  no_index = [image['id'] for image in ground_truth['images'] if 'crowdIndex' not in image]
  if no_index:
    raise errors.UserError(f'{len(no_index)} image(s) of {name} have no crowdIndex: '
                           f'{_ids(no_index)}')
  sigmas = np.asarray(sigmas, np.float64)
  size = 3 * len(sigmas)
  wrong = ({r['image_id'] for r in results if len(r['keypoints']) != size} |
           {a['image_id'] for a in ground_truth['annotations'] if len(a['keypoints']) != size})
  if wrong:
    raise errors.UserError(f'keypoints of image(s) {_ids(wrong)} do not have {len(sigmas)} joints '
                           f'(x, y, v each), one per sigma')
  with contextlib.redirect_stdout(io.StringIO()) as printed:
    truth = evaluation.coco_of(_with_tool_areas(ground_truth))
    detections = truth.loadRes([dict(r) for r in results])
    crowd_eval = _CrowdPoseEval(truth, detections, sigmas, crowd_splits(ground_truth['images']))
    crowd_eval.evaluate()
    crowd_eval.accumulate()
    crowd_eval.summarize()
  table = '\n'.join(line for line in printed.getvalue().splitlines()
                    if line.startswith(' Average'))
  metrics = {n: float(crowd_eval.stats[i]) for n, i in zip(METRIC_NAMES, _STAT_INDEX)}
  return metrics, table
