"""Associative-embedding grouping: the official HeatmapParser's people, order and scores."""

import json
import os

import numpy as np
import pytest

from conftest import OFFICIAL_HIGHER, REFERENCE_HIGHER
from hrnet_jax import grouping

# The tolerances: coordinates within 1e-3 px, scores within 1e-5.
COORD_ATOL, SCORE_ATOL = 1e-3, 1e-5
TORCH_TOP4 = [50, 3, 1999, 51]


def assert_same_people(people, scores, expected_people, expected_scores):
  assert people.shape == expected_people.shape
  np.testing.assert_allclose(people[..., :2], expected_people[..., :2], rtol=0, atol=COORD_ATOL)
  np.testing.assert_allclose(people[..., 2:], expected_people[..., 2:], rtol=0, atol=SCORE_ATOL)
  np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=SCORE_ATOL)


def test_official_group_cases_are_reproduced():
  """group_cases.npz: official HeatmapParser output on (1, 17, 128, 128) maps, 2 to 11 people."""
  data = np.load(os.path.join(OFFICIAL_HIGHER, 'group_cases.npz'))
  with open(os.path.join(OFFICIAL_HIGHER, 'group_cases.json')) as f:
    meta = json.load(f)
  assert tuple(meta['joint_order']) == grouping.COCO_JOINT_ORDER
  options = {k: meta[k] for k in ('max_num_people', 'detection_threshold', 'tag_threshold',
                                  'use_detection_val', 'ignore_too_much', 'nms_kernel',
                                  'adjust', 'refine')}
  for c in range(meta['count']):
    det = data[f'det_{c}'][0].transpose(1, 2, 0)  # (K, H, W) -> (H, W, K)
    tag = data[f'tag_{c}'][0].transpose(1, 2, 0, 3)
    people, scores = grouping.parse(det, tag, **options)
    assert_same_people(people, scores, data[f'people_{c}'], data[f'scores_{c}'])


def test_random_cases_match_transcribed_official_parser():
  """Made by tests/reference/make_higher_hrnet_cases.py: crowds over 30, quantised values with
  ties, one- and two-dimensional tags, and every option of parse."""
  data = np.load(os.path.join(REFERENCE_HIGHER, 'group_random.npz'))
  options = json.loads(str(data['options']))
  found = []
  for c, kwargs in enumerate(options):
    people, scores = grouping.parse(data[f'det_{c}'].transpose(1, 2, 0),
                                    data[f'tag_{c}'].transpose(1, 2, 0, 3), **kwargs)
    assert_same_people(people, scores, data[f'people_{c}'], data[f'scores_{c}'])
    found.append(len(people))
  assert max(found) > 30 and min(found) == 0


def test_topk_ties_come_in_torch_order():
  """torch.topk on the CPU (a heap select) does not give tied values in index order."""
  values = np.zeros(2000, np.float32)
  values[[3, 50, 51, 700, 1999, 40]] = [0.5, 0.5, 0.5, 0.25, 0.5, 0.25]
  # torch.topk(torch.from_numpy(values), 4).indices, torch 2.13.0 CPU:
  assert grouping.torch_topk_indices(values, 4).tolist() == TORCH_TOP4


def test_well_separated_people_are_grouped_by_tag():
  h, w, k = 64, 64, 17
  det = np.zeros((h, w, k), np.float32)
  tag = np.zeros((h, w, k, 1), np.float32)
  rng = np.random.default_rng(0)
  truth = rng.integers(4, 60, (3, k, 2))
  truth[..., 0] = 4 + 20 * np.arange(3)[:, None] + rng.integers(0, 12, (3, k))  # apart in x
  for p in range(3):
    for j in range(k):
      x, y = truth[p, j]
      det[y, x, j] = max(det[y, x, j], 0.9 - 0.1 * p)
      tag[y, x, j, 0] = 3.0 * p
  people, scores = grouping.parse(det, tag, refine=False)
  assert len(people) == 3
  for person in people:
    p = int(round(person[0, 3] / 3.0))
    np.testing.assert_allclose(person[:, 3], 3.0 * p)
    # +0.5 to the pixel centre, then a quarter step (all neighbours 0: towards -x and -y).
    np.testing.assert_allclose(person[:, :2], truth[p] + 0.25)
  np.testing.assert_allclose(sorted(scores), [0.7, 0.8, 0.9], rtol=1e-6)


def test_bad_shapes_are_refused():
  with pytest.raises(ValueError, match=r'det \(H, W, K\)'):
    grouping.parse(np.zeros((8, 8, 17)), np.zeros((8, 8, 16, 1)))
