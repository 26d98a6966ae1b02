"""CrowdPose keypoint AP (``hrnet_jax.crowdpose``) against the official crowdpose-api.

``tests/fixtures/crowdpose_cases.json`` holds result sets on the real CrowdPose sample and the
stats and table the tool itself printed for each (``tests/reference/make_crowdpose_cases.py``).
"""

import copy
import json
import os

import pytest

from conftest import FIXTURES
from hrnet_jax import crowdpose, errors

TOLERANCE = 1e-12  # absolute, on every number: the same arithmetic as the tool's
GROUND_TRUTH = os.path.join(FIXTURES, 'real_data', 'crowdpose', 'test_crowdpose.json')

with open(os.path.join(FIXTURES, 'crowdpose_cases.json')) as f:
  CASES = json.load(f)
with open(GROUND_TRUTH) as f:
  TRUTH = json.load(f)


def case_ground_truth(case):
  """The ground truth of a case: as make_crowdpose_cases.variant, crowdIndex and area set."""
  crowd_index = {int(k): v for k, v in case.get('crowd_index', {}).items()}
  images = [dict(image, crowdIndex=crowd_index.get(image['id'], image['crowdIndex']))
            for image in TRUTH['images']]
  annotations = [dict(a, area=case['gt_area']) if 'gt_area' in case else a
                 for a in TRUTH['annotations']]
  return dict(TRUTH, images=images, annotations=annotations)


def the_case(name):
  return next(c for c in CASES['cases'] if c['name'] == name)


@pytest.mark.parametrize('case', CASES['cases'], ids=lambda c: c['name'])
def test_equals_the_tool(case):
  metrics, table = crowdpose.crowdpose_keypoint_eval(case_ground_truth(case), case['results'],
                                                     crowdpose.CROWDPOSE_OKS_SIGMAS)
  assert list(metrics) == list(crowdpose.METRIC_NAMES)
  for name in crowdpose.METRIC_NAMES:
    expected = case['stats'][CASES['stat_index'][name]]
    assert abs(metrics[name] - expected) <= TOLERANCE, (name, metrics[name], expected)
  assert table == case['table']


def test_oracle():
  """Ground-truth keypoints, score 1: AP 1, and -1 for a crowd range without images."""
  truth = copy.deepcopy(TRUTH)
  case = the_case('oracle')
  results = copy.deepcopy(case['results'])
  metrics, table = crowdpose.crowdpose_keypoint_eval(truth, results,
                                                     crowdpose.CROWDPOSE_OKS_SIGMAS)
  assert {i['crowdIndex'] for i in TRUTH['images']} == {0.33, 0.39}  # both medium
  assert metrics == {'AP': 1.0, 'AP50': 1.0, 'AP75': 1.0, 'AR': 1.0, 'AR50': 1.0, 'AR75': 1.0,
                     'AP_easy': -1.0, 'AP_medium': 1.0, 'AP_hard': -1.0}
  assert [metrics[n] for n in crowdpose.METRIC_NAMES] == [
      case['stats'][i] for i in CASES['stat_index'].values()]
  assert table.splitlines()[-3] == (
      ' Average Recall     (AR) @[ IoU=0.50:0.95 | type=  easy | maxDets= 20 ] = -1.000')
  # The inputs are left as they were (no area added to the annotations, no ids to results).
  assert truth == TRUTH and results == case['results']
  assert crowdpose.crowdpose_keypoint_eval(GROUND_TRUTH, results,
                                           crowdpose.CROWDPOSE_OKS_SIGMAS) == (metrics, table)
  easy_hard = crowdpose.crowdpose_keypoint_eval(case_ground_truth(the_case('oracle_easy_hard')),
                                                results, crowdpose.CROWDPOSE_OKS_SIGMAS)[0]
  assert (easy_hard['AP_easy'], easy_hard['AP_medium'], easy_hard['AP_hard']) == (1, -1, 1)


def test_crowd_splits():
  images = [{'id': i, 'crowdIndex': c} for i, c in enumerate((0, .1999, .2, .5, .7999, .8, 1))]
  assert crowdpose.crowd_splits(images) == ([0, 1], [2, 3, 4], [5, 6])


def test_bad_input():
  results = copy.deepcopy(the_case('noise_3px')['results'])
  results[1]['image_id'] = 999999
  with pytest.raises(errors.UserError, match='999999'):
    crowdpose.crowdpose_keypoint_eval(TRUTH, results, crowdpose.CROWDPOSE_OKS_SIGMAS)
  with pytest.raises(errors.UserError, match='no keypoint results'):
    crowdpose.crowdpose_keypoint_eval(TRUTH, [], crowdpose.CROWDPOSE_OKS_SIGMAS)
  with pytest.raises(errors.UserError, match='do not have 17 joints'):
    crowdpose.crowdpose_keypoint_eval(TRUTH, the_case('noise_3px')['results'], [0.1] * 17)


def test_sigmas():
  """14 sigmas, as the tool's computeOks writes them, in the order of the json's joints."""
  assert len(crowdpose.CROWDPOSE_OKS_SIGMAS) == len(TRUTH['categories'][0]['keypoints']) == 14
  assert crowdpose.CROWDPOSE_OKS_SIGMAS.tolist() == [
      s / 10.0 for s in (.79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89, .79, .79)]
