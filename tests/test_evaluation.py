"""The COCO evaluation path: oracle heatmaps through decode, rescoring, OKS NMS and COCOeval.

The oracle renders Gaussian heatmaps at the ground-truth keypoints of a synthetic val set
and sends them through the same code as ``launch/eval.py`` after the network
(``decode.heatmaps_to_keypoints``, ``tasks.coco_results``, the ``coco_keypoints`` evaluator
and ``evaluators.write``).
"""

import contextlib
import io
import json
import os

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hrnet_jax import config_lib, decode, evaluation, evaluators, keypoints as kp, tasks
from input_pipeline import coco, synthetic

ORACLE_MIN_AP = 0.99  # the acceptance list's bound for ground-truth heatmaps


@pytest.fixture(scope='module')
def val_set(tmp_path_factory):
  """40 synthetic val images (several people each) and their ground-truth boxes."""
  root = str(tmp_path_factory.mktemp('oracle'))
  synthetic.write_dataset(root, num_train=1, num_val=40, seed=3)
  config = config_lib.topdown_config(width=4, image_size=(192, 256), sigma=2, batch_size=8,
                                     test_batch_size=8)
  config.dataset.root, config.dataset.val_split = root, 'val'
  people = coco.load_ground_truth(root, 'val', aspect_ratio=192 / 256)
  return config, people, coco.annotation_path(root, 'val')


def oracle_heatmaps(people, heatmap_size, sigma=2.0, shift_px=0.0, seed=0):
  """Gaussians at each labelled joint (optionally moved by ``shift_px`` image pixels)."""
  w, h = heatmap_size
  rng = np.random.default_rng(seed)
  angle = rng.uniform(0, 2 * np.pi, people.keypoints.shape[:2])
  moved = people.keypoints[..., :2] + shift_px * np.stack([np.cos(angle), np.sin(angle)], -1)
  zoom = people.scales[:, 0] * kp.PIXEL_STD / w  # image pixels per heatmap pixel
  xy = (moved - people.centers[:, None]) / zoom[:, None, None] + np.array([w, h]) / 2
  ys, xs = np.mgrid[0:h, 0:w]
  d2 = (xs[None, None] - xy[..., 0, None, None])**2 + (ys[None, None] - xy[..., 1, None, None])**2
  heatmaps = np.exp(-d2 / (2 * sigma**2)) * (people.keypoints[..., 2] > 0)[..., None, None]
  return heatmaps.transpose(0, 2, 3, 1).astype(np.float32)  # NHWC


def predictions(people, heatmaps):
  coords, maxvals = decode.heatmaps_to_keypoints(heatmaps, people.centers, people.scales)
  return {'keypoints': np.concatenate([coords, maxvals], -1), 'center': people.centers,
          'scale': people.scales, 'score': people.scores, 'image_id': people.image_ids}


class FixedPredictions(tasks.ValSource):
  """A val split whose predictions are given: what the network would have found."""

  def __init__(self, annotation_file, results):
    self.ground_truth, self.split, self.results = coco.read_json(annotation_file), 'val', results

  def predict_split(self, variables):
    del variables
    return tasks.ValPredictions(self.results, f'{len(self.results)} given people')


def score(config, found, annotations, workdir):
  """What launch/eval.py does after the network: rescoring, OKS NMS, COCOeval, the files."""
  evaluator = evaluators.CocoKeypoints(
      FixedPredictions(annotations, tasks.coco_results(config, found)), config)
  flat = evaluators.write({'coco': evaluator.run(None)}, workdir, step=0, verbose=False)
  return {k.split('/', 1)[1]: v for k, v in flat.items()}


def test_oracle_heatmaps_reach_ap_099_and_perturbation_lowers_it(val_set, tmp_path):
  config, people, annotations = val_set
  hm_size = config.dataset.heatmap_size
  oracle = score(config, predictions(people, oracle_heatmaps(people, hm_size)), annotations,
                 str(tmp_path / 'oracle'))
  assert oracle['AP'] >= ORACLE_MIN_AP, oracle
  perturbed = score(config, predictions(people, oracle_heatmaps(people, hm_size, shift_px=4.0)),
                    annotations, str(tmp_path / 'perturbed'))
  assert perturbed['AP'] < oracle['AP'] - 0.05, (oracle['AP'], perturbed['AP'])

  # The files of the eval job: COCO results and the ten metrics.
  with open(tmp_path / 'oracle' / 'eval' / 'val_keypoints_results.json') as f:
    results = json.load(f)
  assert len(results) == len(people)  # one box per person, none suppressed at OKS 0.9
  assert set(results[0]) >= {'image_id', 'category_id', 'keypoints', 'score'}
  assert len(results[0]['keypoints']) == 17 * 3
  with open(tmp_path / 'oracle' / 'eval' / 'val_metrics.json') as f:
    assert json.load(f) == oracle
  assert tuple(oracle) == evaluation.METRIC_NAMES


def test_our_coco_eval_is_pycocotools_run_by_hand(val_set, tmp_path):
  config, people, annotations = val_set
  preds = predictions(people, oracle_heatmaps(people, config.dataset.heatmap_size,
                                              shift_px=2.0, seed=5))
  results = evaluation.keypoint_results(preds['keypoints'], preds['score'], preds['image_id'],
                                        preds['center'], preds['scale'])
  path = str(tmp_path / 'results.json')
  with open(path, 'w') as f:
    json.dump(results, f)
  ours, table = evaluation.coco_keypoint_eval(annotations, path)

  with contextlib.redirect_stdout(io.StringIO()):
    ground_truth = COCO(annotations)
    by_hand = COCOeval(ground_truth, ground_truth.loadRes(path), 'keypoints')
    by_hand.params.useSegm = None
    by_hand.evaluate()
    by_hand.accumulate()
    by_hand.summarize()
  assert list(ours.values()) == [float(v) for v in by_hand.stats]  # exactly equal
  assert 0.3 < ours['AP'] < 0.99
  assert table.count('Average Precision') == 5 and table.count('Average Recall') == 5


def test_rescoring_and_nms_of_duplicates(val_set):
  """A second, weaker copy of every person is suppressed by OKS NMS (threshold 0.9)."""
  config, people, _ = val_set
  preds = predictions(people, oracle_heatmaps(people, config.dataset.heatmap_size))
  doubled = {k: np.concatenate([v, v]) for k, v in preds.items()}
  doubled['score'] = np.concatenate([preds['score'], preds['score'] * 0.5])
  results = evaluation.keypoint_results(doubled['keypoints'], doubled['score'],
                                        doubled['image_id'], doubled['center'],
                                        doubled['scale'])
  assert len(results) == len(people)
  # Rescored: box score x mean of the keypoint maxvals above 0.2.
  visible = preds['keypoints'][..., 2]
  expected = [np.mean(v[v > 0.2]) for v in visible]
  np.testing.assert_allclose(sorted(r['score'] for r in results), sorted(expected), rtol=1e-12)
  soft = evaluation.keypoint_results(doubled['keypoints'], doubled['score'],
                                     doubled['image_id'], doubled['center'], doubled['scale'],
                                     soft_nms=True)
  assert len(soft) > len(results)  # soft NMS lowers scores instead of dropping people


def test_clear_errors(val_set, tmp_path):
  config, people, annotations = val_set
  with pytest.raises(ValueError, match='no keypoint results'):
    evaluation.coco_keypoint_eval(annotations, [])
  stray = [{'image_id': 987654, 'category_id': 1, 'keypoints': [0.0] * 51, 'score': 1.0}]
  with pytest.raises(ValueError, match='987654'):
    evaluation.coco_keypoint_eval(annotations, stray)

  root = config.dataset.root
  empty = tmp_path / 'empty.json'
  empty.write_text('[]')
  with pytest.raises(coco.DatasetError, match='empty'):
    coco.load_detections(str(empty), root, 'val', aspect_ratio=0.75)
  unknown = tmp_path / 'unknown.json'
  unknown.write_text(json.dumps([{'image_id': 424242, 'category_id': 1, 'score': 0.9,
                                  'bbox': [0, 0, 10, 20]}]))
  with pytest.raises(coco.DatasetError, match='424242'):
    coco.load_detections(str(unknown), root, 'val', aspect_ratio=0.75)


def test_detection_boxes_through_the_eval_dataset(val_set, tmp_path):
  """config.test.use_gt_bbox=False reads test.bbox_file and keeps boxes above image_thre."""
  config, people, _ = val_set
  boxes = []
  for i, image_id in enumerate(people.image_ids):
    w, h = people.scales[i] * kp.PIXEL_STD / 1.25
    x, y = people.centers[i] - np.array([w, h]) / 2
    boxes.append({'image_id': int(image_id), 'category_id': 1,
                  'bbox': [float(v) for v in (x, y, w, h)],
                  'score': 0.5 if i % 2 else 0.9})
  bbox_file = tmp_path / 'detections.json'
  bbox_file.write_text(json.dumps(boxes))
  config = config_lib.override(config, {'test.use_gt_bbox': False,
                                        'test.bbox_file': str(bbox_file),
                                        'test.image_thre': 0.7})
  ds, _, n = tasks.eval_dataset(config)
  annotation_file = tasks.val_split(config).source
  assert n == (len(people) + 1) // 2
  batches = list(ds.as_numpy_iterator())
  scores = np.concatenate([b['score'][b['mask'] > 0] for b in batches])
  assert len(scores) == n and np.all(scores == np.float32(0.9))
  np.testing.assert_allclose(np.concatenate([b['center'][b['mask'] > 0] for b in batches]),
                             people.centers[::2], rtol=1e-6)
  assert os.path.exists(annotation_file)


def test_evaluators_of_a_config_share_one_prediction_per_evaluation(val_set):
  """Two evaluators on one source predict the split once per run_all, and keep nothing after."""
  config, people, annotations = val_set
  source = FixedPredictions(annotations, tasks.coco_results(
      config, predictions(people, oracle_heatmaps(people, config.dataset.heatmap_size))))
  calls = []
  predict_split = source.predict_split
  source.predict_split = lambda variables: calls.append(variables) or predict_split(variables)
  both = {'a': evaluators.CocoKeypoints(source, config),
          'b': evaluators.CocoKeypoints(source, config)}
  variables = {'params': None}
  first = evaluators.run_all(both, variables)
  assert len(calls) == 1 and first['a'].metrics == first['b'].metrics
  assert source._last is None  # the variables are not held until the next evaluation
  evaluators.run_all(both, variables)
  assert len(calls) == 2
