"""Tracking people across frames: the One-Euro filter and the greedy OKS / IoU ``PoseTracker``.

The filter is checked against a plain scalar transcription of the paper's reference
algorithm (Casiez's ``LowPassFilter`` / ``OneEuroFilter`` classes); the tracker on synthetic
COCO skeletons moved a few pixels a frame.
"""

import math

import numpy as np
import pytest

from hrnet_jax import errors, evaluation, keypoints as kp
from hrnet_jax.tracking import OneEuroFilter, PoseTracker, Tracked, box_iou

COCO = kp.preset('coco')
SIGMAS = COCO.sigmas
K = COCO.num_joints
FPS = 30.0
# A standing person, about 100 x 200 px: x, y of the 17 COCO joints.
TEMPLATE = np.array([
    [50, 20], [45, 15], [55, 15], [38, 18], [62, 18], [30, 50], [70, 50], [22, 85], [78, 85],
    [18, 120], [82, 120], [38, 120], [62, 120], [36, 165], [64, 165], [34, 210], [66, 210]],
    dtype=np.float64)


class _LowPass:
  """The reference ``LowPassFilter``: the first value passes, then alpha x + (1 - alpha) prev."""

  def __init__(self):
    self.hat_x_prev = None

  def __call__(self, x, alpha):
    hat_x = x if self.hat_x_prev is None else alpha * x + (1.0 - alpha) * self.hat_x_prev
    self.hat_x_prev = hat_x
    return hat_x


class _ScalarOneEuro:
  """The reference ``OneEuroFilter`` of one number, written out as in the paper's code."""

  def __init__(self, freq, min_cutoff, beta, d_cutoff):
    self.freq, self.min_cutoff, self.beta, self.d_cutoff = freq, min_cutoff, beta, d_cutoff
    self.x, self.dx, self.last_time = _LowPass(), _LowPass(), None

  def alpha(self, cutoff):
    te = 1.0 / self.freq
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / te)

  def __call__(self, x, timestamp):
    if self.last_time is not None:
      self.freq = 1.0 / (timestamp - self.last_time)
    self.last_time = timestamp
    prev_x = self.x.hat_x_prev
    dx = 0.0 if prev_x is None else (x - prev_x) * self.freq
    edx = self.dx(dx, self.alpha(self.d_cutoff))
    cutoff = self.min_cutoff + self.beta * abs(edx)
    return self.x(x, self.alpha(cutoff))


def person(offset, rng=None, noise=0.0, score=0.9):
  """A skeleton moved by ``offset`` (plus noise): keypoints (K, 2), scores (K,), box (4,)."""
  keypoints = TEMPLATE + np.asarray(offset, np.float64)
  if rng is not None:
    keypoints = keypoints + rng.normal(0, noise, keypoints.shape)
  low, high = keypoints.min(0) - 10, keypoints.max(0) + 10
  return keypoints, np.full(K, score), np.concatenate([low, high - low])


def frame(*people):
  """Stacks people into the (N, K, 2), (N, K), (N, 4) arrays of one frame."""
  if not people:
    return np.zeros((0, K, 2)), np.zeros((0, K)), np.zeros((0, 4))
  return tuple(np.stack(parts) for parts in zip(*people))


def test_one_euro_matches_the_reference_algorithm():
  rng = np.random.default_rng(0)
  times = np.cumsum(rng.uniform(0.02, 0.05, 60))  # irregular frame times
  signal = np.cumsum(rng.normal(0, 3, (60, 4, 2)), axis=0) + rng.normal(0, 1, (60, 4, 2)) + 100
  params = dict(min_cutoff=0.7, beta=0.05, d_cutoff=1.3)
  vectorised = OneEuroFilter(**params)
  ours = np.stack([vectorised(x, t) for x, t in zip(signal, times)])
  scalars = [_ScalarOneEuro(FPS, **params) for _ in range(8)]
  expected = np.array([[f(float(v), float(t)) for f, v in zip(scalars, x.ravel())]
                       for x, t in zip(signal, times)]).reshape(signal.shape)
  np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
  assert ours.dtype == np.float64 and ours.shape == signal.shape
  np.testing.assert_array_equal(ours[0], signal[0])  # the first value passes unchanged


def test_one_euro_keeps_a_constant_and_smooths_a_noisy_line():
  steady = OneEuroFilter(min_cutoff=1.0, beta=0.1)
  x = np.array([[3.5, -2.0], [120.25, 7.0]])
  for i in range(30):
    np.testing.assert_allclose(steady(x, i / FPS), x, rtol=1e-14, atol=0)

  rng = np.random.default_rng(1)
  times = np.arange(150) / FPS
  speed = 60.0  # px / s
  truth = speed * times
  noisy = truth + rng.normal(0, 1.0, times.shape)
  results = {}
  for beta in (0.0, 0.01):
    f = OneEuroFilter(min_cutoff=1.0, beta=beta)
    smooth = np.array([f(np.array([v]), t)[0] for v, t in zip(noisy, times)])
    jitter = np.std(np.diff(smooth))
    lag = truth[30:] - smooth[30:]  # after the start-up
    results[beta] = jitter, lag.mean(), np.abs(lag).max()
  raw_jitter = np.std(np.diff(noisy))
  for jitter, mean_lag, max_lag in results.values():
    assert jitter < 0.5 * raw_jitter
    assert 0 < mean_lag and max_lag < 0.2 * speed  # behind the motion by less than 0.2 s
  # The speed term lowers the lag (1 / (2 pi) s at beta 0; far less at 60 px/s with beta).
  assert results[0.01][1] < 0.5 * results[0.0][1]
  assert abs(results[0.0][1] - speed / (2 * math.pi)) < 0.1 * speed / (2 * math.pi)


def test_one_euro_errors():
  with pytest.raises(errors.UserError, match='min_cutoff'):
    OneEuroFilter(min_cutoff=0.0)
  with pytest.raises(errors.UserError, match='beta'):
    OneEuroFilter(beta=-1.0)
  f = OneEuroFilter()
  f(np.zeros((17, 2)), 0.0)
  with pytest.raises(errors.UserError, match=r'\(3, 2\)'):
    f(np.zeros((3, 2)), 1.0)
  with pytest.raises(errors.UserError, match='after the last one'):
    f(np.zeros((17, 2)), 0.0)
  f.reset()
  np.testing.assert_array_equal(f(np.ones((3, 2)), 0.0), np.ones((3, 2)))


def walk(num_frames=15, seed=0, swap=(3, 7, 8, 12)):
  """Two people walking apart at 4 and -3 px a frame: per frame, the people and who is who."""
  rng = np.random.default_rng(seed)
  frames = []
  for f in range(num_frames):
    a = person((4.0 * f, 2.0 * f), rng, 1.0)
    b = person((300.0 - 3.0 * f, 5.0), rng, 1.0)
    frames.append(((b, a), ('b', 'a')) if f in swap else ((a, b), ('a', 'b')))
  return frames


def test_two_people_keep_their_ids():
  tracker = PoseTracker(SIGMAS)
  for f, (people, names) in enumerate(walk()):
    keypoints, scores, boxes = frame(*people)
    tracked = tracker.update(keypoints, scores, boxes, f / FPS)
    assert isinstance(tracked, Tracked)
    assert tracked.track_ids.dtype == np.int64 and tracked.keypoints.dtype == np.float64
    assert dict(zip(names, tracked.track_ids.tolist())) == {'a': 0, 'b': 1}
    np.testing.assert_array_equal(tracked.keypoints, keypoints)  # no smoothing: the input
  assert tracker.live_track_ids == (0, 1)


@pytest.mark.parametrize('missing, same_id', [(2, True), (5, True), (6, False)])
def test_a_person_returning_within_max_age_gets_the_id_back(missing, same_id):
  tracker = PoseTracker(SIGMAS, max_age=5)
  step = 0
  def update(*people):
    nonlocal step
    step += 1
    return tracker.update(*frame(*people), timestamp=step / FPS).track_ids.tolist()
  assert update(person((0, 0)), person((400, 0))) == [0, 1]
  for i in range(missing):  # the first person is gone; the second stays
    assert update(person((400 + i, 0))) == [1]
  assert tracker.live_track_ids == ((0, 1) if same_id else (1,))
  back = update(person((2, 1)), person((400 + missing, 0)))
  assert back == ([0, 1] if same_id else [2, 1])  # dropped ids are never reused


def test_a_new_person_gets_a_new_id_and_empty_frames_work():
  tracker = PoseTracker(SIGMAS)
  empty = tracker.update(*frame(), timestamp=0.0)
  assert empty.track_ids.shape == (0,) and empty.track_ids.dtype == np.int64
  assert empty.keypoints.shape == (0, K, 2)
  ids = []
  for f in range(1, 8):
    people = [person((3.0 * f, 0)), person((300, 2.0 * f))]
    if f >= 4:  # a third person walks in, listed first
      people.insert(0, person((600 - 5.0 * f, 40)))
    if f == 5:
      people = []  # an empty frame: the tracks wait
    ids.append(tracker.update(*frame(*people), timestamp=f / FPS).track_ids.tolist())
  assert ids == [[0, 1], [0, 1], [0, 1], [2, 0, 1], [], [2, 0, 1], [2, 0, 1]]
  tracker.reset()
  assert tracker.live_track_ids == ()
  assert tracker.update(*frame(person((0, 0))), timestamp=0.0).track_ids.tolist() == [0]


def test_oks_is_coco_formula_on_the_shared_confident_joints():
  rng = np.random.default_rng(2)
  track, track_scores, box = person((0, 0))
  track_scores[[0, 5]] = 0.1  # not confident in the track
  moved, scores, _ = person((6, -4), rng, 3.0)
  scores[[7, 16]] = 0.2  # nor in the person
  shared = np.ones(K, bool)
  shared[[0, 5, 7, 16]] = False
  area = box[2] * box[3]
  oks = evaluation.oks_iou(np.c_[track, np.ones(K)][shared], np.c_[moved, np.ones(K)][None, shared],
                           area, [area], np.asarray(SIGMAS)[shared])[0]
  assert 0.3 < oks < 0.99
  for threshold, same in ((oks - 1e-9, True), (oks + 1e-9, False)):
    tracker = PoseTracker(SIGMAS, oks_threshold=threshold, iou_threshold=0.0)
    tracker.update(track[None], track_scores[None], box[None], 0.0)
    # The same box: a match by IoU would always be taken; OKS decides.
    ids = tracker.update(moved[None], scores[None], box[None], 1 / FPS).track_ids
    assert ids.tolist() == ([0] if same else [1])


def test_few_confident_joints_fall_back_to_box_iou():
  keypoints, scores, box = person((0, 0))
  far_box = box + np.array([0.5 * box[2], 0, 0, 0])  # IoU 1/3
  near_box = box + np.array([0.1 * box[2], 0, 0, 0])  # IoU 9/11
  iou = box_iou(box[None], np.stack([far_box, near_box]))[0]
  np.testing.assert_allclose(iou, [1 / 3, 9 / 11])

  def second_id(new_keypoints, new_scores, new_box):
    tracker = PoseTracker(SIGMAS, oks_threshold=0.5, iou_threshold=0.5)
    tracker.update(keypoints[None], scores[None], box[None], 0.0)
    return tracker.update(new_keypoints[None], new_scores[None], new_box[None], 0.1).track_ids[0]

  unsure = np.full(K, 0.1)
  garbage = keypoints + 80.0  # all joints far: OKS would be ~0
  assert second_id(garbage, unsure, near_box) == 0  # matched by IoU
  assert second_id(garbage, unsure, far_box) == 1  # IoU below its threshold
  two = unsure.copy()
  two[:2] = 0.9  # two confident joints, at the right place: still too few for OKS
  assert second_id(keypoints, two, far_box) == 1
  three = unsure.copy()
  three[:3] = 0.9  # three: OKS (1.0) decides, the box no longer matters
  assert second_id(keypoints, three, far_box) == 0


@pytest.mark.parametrize('order', [(0, 1), (1, 0)])
def test_the_most_similar_pair_wins(order):
  tracker = PoseTracker(SIGMAS)
  first = tracker.update(*frame(person((0, 0)), person((20, 0))), timestamp=0.0)
  assert first.track_ids.tolist() == [0, 1]
  # One person between the tracks, nearer the second: the second track takes it.
  assert tracker.update(*frame(person((14, 0))), timestamp=0.1).track_ids.tolist() == [1]
  assert tracker.live_track_ids == (0, 1)
  # u is nearer track 1 than track 0, but v is nearer still: v takes track 1 first, u track 0
  # (going person by person in input order would give u track 1).
  people = [person((10, 0)), person((15, 0))]  # u, v
  ids = tracker.update(*frame(*(people[i] for i in order)), timestamp=0.2).track_ids.tolist()
  assert ids == [[0, 1][i] for i in order]


def test_smoothing_is_a_one_euro_filter_per_track():
  params = dict(min_cutoff=0.5, beta=0.02)
  tracker = PoseTracker(SIGMAS, max_age=2, smoothing=params)
  filters = {}
  frames = walk()
  for f in range(5, 9):  # b leaves for 4 frames
    people, names = frames[f]
    frames[f] = (people[names.index('a'):][:1], ('a',))
  for f, (people, names) in enumerate(frames):
    keypoints, scores, boxes = frame(*people)
    tracked = tracker.update(keypoints, scores, boxes, f / FPS)
    for track_id, raw, smooth in zip(tracked.track_ids.tolist(), keypoints, tracked.keypoints):
      if track_id not in filters:  # a new track: a new filter; its first output is the input
        filters[track_id] = OneEuroFilter(**params)
      np.testing.assert_array_equal(smooth, filters[track_id](raw, f / FPS))
      if f > 0 and track_id == 0:
        assert not np.array_equal(smooth, raw)
  # The person gone for 4 frames (> max_age) came back as track 2, with a fresh filter.
  assert sorted(filters) == [0, 1, 2]


@pytest.mark.parametrize('keypoints, scores, boxes, match', [
    (np.zeros((2, K)), np.zeros((2, K)), np.zeros((2, 4)), r'keypoints of shape \(2, 17\)'),
    (np.zeros((2, 14, 2)), np.zeros((2, 14)), np.zeros((2, 4)),
     r'keypoints of shape \(2, 14, 2\): expected \(N, 17, 2\)'),
    (np.zeros((2, K, 3)), np.zeros((2, K)), np.zeros((2, 4)), r'\(2, 17, 3\)'),
    (np.zeros((2, K, 2)), np.zeros((3, K)), np.zeros((2, 4)), r'joint_scores of shape \(3, 17\)'),
    (np.zeros((2, K, 2)), np.zeros((2, K)), np.zeros((2, 5)), r'boxes of shape \(2, 5\)'),
    (np.zeros((1, K, 2)), np.zeros((1, K)), np.array([[0, 0, -1, 5]]), 'negative width'),
    (np.full((1, K, 2), np.nan), np.zeros((1, K)), np.zeros((1, 4)), 'keypoints hold NaN'),
])
def test_bad_inputs_raise_user_errors(keypoints, scores, boxes, match):
  with pytest.raises(errors.UserError, match=match):
    PoseTracker(SIGMAS).update(keypoints, scores, boxes, 0.0)


def test_bad_settings_and_timestamps_raise_user_errors():
  with pytest.raises(errors.UserError, match='sigmas'):
    PoseTracker([])
  with pytest.raises(errors.UserError, match='oks_threshold'):
    PoseTracker(SIGMAS, oks_threshold=1.5)
  with pytest.raises(errors.UserError, match='max_age'):
    PoseTracker(SIGMAS, max_age=-1)
  with pytest.raises(errors.UserError, match=r"unknown key\(s\) \['cutoff'\]"):
    PoseTracker(SIGMAS, smoothing={'cutoff': 1.0})
  with pytest.raises(errors.UserError, match='d_cutoff'):
    PoseTracker(SIGMAS, smoothing={'d_cutoff': 0})
  tracker = PoseTracker(SIGMAS)
  tracker.update(*frame(person((0, 0))), timestamp=1.0)
  with pytest.raises(errors.UserError, match='after the last frame'):
    tracker.update(*frame(person((0, 0))), timestamp=1.0)
