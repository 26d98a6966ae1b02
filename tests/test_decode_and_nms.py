"""Heatmap decoding, the flip-test merge, OKS NMS and rescoring against the official code.

Fixtures: decode_cases.npz and oks_nms_cases.npz, made by running the official code. Random
cases: the official numpy code transcribed in official_reference.py.
"""

import os

import numpy as np
import pytest

import official_reference as ref
from conftest import OFFICIAL
from hrnet_jax import decode, evaluation, keypoints as kp

COORD_TOL = 1e-3  # px, the acceptance list's bound; maxvals and keep lists must be equal

DECODE = np.load(os.path.join(OFFICIAL, 'decode_cases.npz'))
NMS = np.load(os.path.join(OFFICIAL, 'oks_nms_cases.npz'))


def nhwc(x):
  return np.asarray(x).transpose(0, 2, 3, 1)


def test_official_decode_cases():
  coords, maxvals = decode.heatmaps_to_keypoints(nhwc(DECODE['heatmaps']), DECODE['center'],
                                                 DECODE['scale'])
  np.testing.assert_allclose(coords, DECODE['preds'], atol=COORD_TOL)
  np.testing.assert_array_equal(maxvals, DECODE['maxvals'])


def test_official_flip_test_merge_and_decode():
  merged = decode.merge_flip_test(nhwc(DECODE['heatmaps']), nhwc(DECODE['flipped_output']),
                                  kp.COCO_FLIP_PAIRS)
  np.testing.assert_array_equal(np.asarray(merged), nhwc(DECODE['flip_test_heatmaps']))
  coords, maxvals = decode.heatmaps_to_keypoints(merged, DECODE['center'], DECODE['scale'])
  np.testing.assert_allclose(coords, DECODE['preds_flip_test'], atol=COORD_TOL)
  np.testing.assert_array_equal(maxvals, DECODE['maxvals_flip_test'])


def random_heatmaps(rng, n=6, k=17, h=64, w=48):
  """Noisy multi-peak heatmaps with ties, border maxima and all-negative joints."""
  hm = rng.normal(0, 0.05, (n, k, h, w)).astype(np.float32)
  ys, xs = np.mgrid[0:h, 0:w]
  for i in range(n):
    for j in range(k):
      cx, cy = rng.uniform(-2, w + 1), rng.uniform(-2, h + 1)
      hm[i, j] += np.exp(-((xs - cx)**2 + (ys - cy)**2) / 8).astype(np.float32)
  hm[0, 0] = -1.0  # no positive maximum: (0, 0)
  hm[0, 1] = 0.5  # ties everywhere: the first index wins
  return hm


@pytest.mark.parametrize('seed', range(3))
def test_random_cases_match_the_official_code(seed):
  rng = np.random.default_rng(seed)
  hm = random_heatmaps(rng)
  center = rng.uniform(50, 600, (6, 2))
  scale = rng.uniform(0.3, 3.0, (6, 2))
  for post_process in (True, False):
    expected, expected_max = ref.get_final_preds(hm.copy(), center, scale, post_process)
    coords, maxvals = decode.heatmaps_to_keypoints(nhwc(hm), center, scale, post_process)
    np.testing.assert_allclose(coords, expected, atol=COORD_TOL)
    np.testing.assert_array_equal(maxvals, expected_max)
  flipped = rng.normal(size=hm.shape).astype(np.float32)
  for shift in (True, False):
    back = ref.flip_back(flipped, kp.COCO_FLIP_PAIRS)
    if shift:
      back[:, :, :, 1:] = back.copy()[:, :, :, 0:-1]
    merged = decode.merge_flip_test(nhwc(hm), nhwc(flipped), kp.COCO_FLIP_PAIRS, shift=shift)
    np.testing.assert_array_equal(np.asarray(merged), nhwc((hm + back) * 0.5))


def test_dark_matches_the_authors_code_and_finds_subpixel_centres():
  rng = np.random.default_rng(3)
  hm = random_heatmaps(rng)
  center, scale = rng.uniform(50, 600, (6, 2)), rng.uniform(0.3, 3.0, (6, 2))
  expected, _ = ref.dark_final_preds(hm.copy(), center, scale)
  coords, _ = decode.heatmaps_to_keypoints(nhwc(hm), center, scale, decoder='dark')
  np.testing.assert_allclose(coords, expected, atol=COORD_TOL)
  # A clean Gaussian at a sub-pixel centre: DARK lands within 0.05 px, the quarter step not.
  ys, xs = np.mgrid[0:64, 0:48]
  true = np.array([20.3, 30.7])
  g = np.exp(-((xs - true[0])**2 + (ys - true[1])**2) / 8)[None, :, :, None]
  unit = dict(center=[[24.0, 32.0]], scale=[[48 / 200, 64 / 200]])  # heatmap px = image px
  dark, _ = decode.heatmaps_to_keypoints(g, decoder='dark', **unit)
  official, _ = decode.heatmaps_to_keypoints(g, **unit)
  assert np.abs(dark[0, 0] - true).max() < 0.05
  assert np.abs(official[0, 0] - true).max() > 0.04


def test_official_oks_nms_cases():
  args = (NMS['keypoints'], NMS['scores'], NMS['areas'], float(NMS['oks_thre']))
  vis = float(NMS['in_vis_thre'])
  assert evaluation.oks_nms(*args, in_vis_thre=vis) == NMS['keep'].tolist()
  assert evaluation.soft_oks_nms(*args, in_vis_thre=vis) == NMS['keep_soft'].tolist()


@pytest.mark.parametrize('seed', range(4))
def test_random_nms_cases_match_the_official_code(seed):
  rng = np.random.default_rng(seed)
  base = rng.uniform(0, 200, (6, 17, 2))
  people = base[rng.integers(0, 6, 40)] + rng.normal(0, rng.choice([0.5, 3, 10]), (40, 17, 2))
  keypoints = np.concatenate([people, rng.uniform(0, 1, (40, 17, 1))], axis=2)
  scores = rng.choice([0.3, 0.5, 0.9], 40) if seed % 2 else rng.uniform(0, 1, 40)  # ties
  areas = rng.uniform(500, 5000, 40)
  for thre in (0.5, 0.9):
    for vis in (None, 0.2):
      args = (keypoints, scores, areas, thre)
      assert evaluation.oks_nms(*args, in_vis_thre=vis) == [
          int(i) for i in ref.oks_nms(*args, in_vis_thre=vis)]
      assert evaluation.soft_oks_nms(*args, in_vis_thre=vis) == [
          int(i) for i in ref.soft_oks_nms(*args, in_vis_thre=vis)]


def test_rescoring_is_box_score_times_mean_visible_keypoint_score():
  scores = np.array([[0.9, 0.1, 0.5], [0.1, 0.15, 0.2]])
  out = evaluation.rescore([0.8, 0.5], scores, in_vis_thre=0.2)
  np.testing.assert_allclose(out, [0.8 * 0.7, 0.0])
