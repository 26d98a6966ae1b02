"""PoseTrack18's AP (``hrnet_jax.posetrack``) against poseval's own numbers on the real sample.

``fixtures/posetrack_cases.json`` holds prediction sets and what poseval (its AP path, run by
``tests/reference/make_posetrack_cases.py``) computed for them on the per-video annotation
files of ``fixtures/real_data/posetrack18/annotations/val/``.
"""

import json
import math
import os

import numpy as np
import pytest

from hrnet_jax import errors, posetrack

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
ANNOTATIONS = os.path.join(FIXTURES, 'real_data', 'posetrack18', 'annotations')
VAL = os.path.join(ANNOTATIONS, 'val')
MERGED = os.path.join(ANNOTATIONS, 'test_posetrack18_val.json')
TOLERANCE = 1e-9  # absolute, on AP in percent: poseval's numbers to float rounding

with open(os.path.join(FIXTURES, 'posetrack_cases.json')) as f:
  CASES = json.load(f)['cases']
BY_NAME = {c['name']: c for c in CASES}


def assert_close(ours, theirs, what):
  """Equal within TOLERANCE; poseval's nan (stored as null) must be nan here too."""
  if theirs is None:
    assert math.isnan(ours), what
  else:
    assert abs(ours - theirs) <= TOLERANCE, (what, ours, theirs)


@pytest.mark.parametrize('case', CASES, ids=[c['name'] for c in CASES])
def test_matches_poseval(case):
  ground_truth = os.path.join(ANNOTATIONS, case['ground_truth'])
  joint_ap = posetrack.posetrack_joint_ap(ground_truth, case['results'])
  for j, (ours, theirs) in enumerate(zip(joint_ap, case['joint_ap'], strict=True)):
    assert_close(ours, theirs, f'{case["name"]}: joint {j}')
  metrics, table = posetrack.posetrack_map(ground_truth, case['results'])
  assert tuple(metrics) == posetrack.METRIC_NAMES
  for name in posetrack.METRIC_NAMES:
    assert_close(metrics[name], case['metrics'][name], f'{case["name"]}: {name}')
  assert table == case['table']


def test_oracle_is_perfect():
  metrics, table = posetrack.posetrack_map(VAL, BY_NAME['oracle']['results'])
  # every joint of poseval is labelled somewhere in the sample, so every group has 100
  assert metrics == {name: 100.0 for name in posetrack.METRIC_NAMES}
  assert table.splitlines()[1] == '&' + '100.0 &' * 7 + '100.0 \\\\'


def test_oracle_of_one_video_counts_unlabelled_joints_as_zero():
  # poseval keeps AP 0 for a joint nobody labels or predicts, and averages it into Total
  case = BY_NAME['one_video_oracle']
  joint_ap = posetrack.posetrack_joint_ap(os.path.join(ANNOTATIONS, case['ground_truth']),
                                          case['results'])
  assert set(joint_ap[:15]) == {0.0, 100.0}
  assert joint_ap[15] == pytest.approx(100 * np.mean(joint_ap[:15] == 100), abs=TOLERANCE)


@pytest.mark.parametrize('name', [c['name'] for c in CASES if c['ground_truth'] == 'val'])
def test_merged_file_equals_per_video_files(name):
  results = BY_NAME[name]['results']
  with open(MERGED) as f:
    merged = json.load(f)
  per_video = posetrack.posetrack_map(VAL, results)
  assert posetrack.posetrack_map(MERGED, results) == per_video
  assert posetrack.posetrack_map(merged, results) == per_video


def test_unknown_image_id_is_named():
  results = BY_NAME['noisy']['results'] + [dict(BY_NAME['noisy']['results'][0],
                                                image_id=10999990007)]
  with pytest.raises(errors.UserError, match='10999990007'):
    posetrack.posetrack_map(MERGED, results)


def test_wrong_joint_counts_are_named():
  result = dict(BY_NAME['noisy']['results'][0])
  result['keypoints'] = result['keypoints'][:-3]
  with pytest.raises(errors.UserError, match='48 keypoint values, expected 51'):
    posetrack.posetrack_map(MERGED, [result])
  with open(MERGED) as f:
    ground_truth = json.load(f)
  ground_truth['annotations'][0] = dict(ground_truth['annotations'][0],
                                        keypoints=[0.0] * 45)
  with pytest.raises(errors.UserError, match=str(ground_truth['annotations'][0]['id'])):
    posetrack.posetrack_map(ground_truth, [])


def test_missing_ground_truth_is_named(tmp_path):
  with pytest.raises(errors.MissingFileError, match='nothing.json'):
    posetrack.posetrack_map(str(tmp_path / 'nothing.json'), [])


def test_points_in_ignore_regions_follow_shapely_rules():
  square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float64)
  points = np.array([[5, 5], [0, 5], [10, 10], [5, 10], [11, 5], [5, 1e-12]])
  # strictly inside only: the boundary (edges, vertices) is not contained
  assert posetrack._inside(points, square).tolist() == [True, False, False, False, False, True]
  bowtie = np.array([[0, 0], [10, 10], [10, 0], [0, 10]], np.float64)  # self-intersecting
  assert posetrack._inside(np.array([[2, 5], [5, 2], [5, 5], [8, 5]]), bowtie).tolist() == [
      True, False, False, True]
