"""Identity of people across video frames: a greedy OKS / IoU tracker and the One-Euro filter.

``PoseTracker.update`` takes one frame's people (keypoints, joint scores, boxes) and gives
each a track id. The similarity of a person and a live track is the OKS of the person's
keypoints with the track's last keypoints (COCO's formula with the keypoint set's sigmas,
over the joints confident in both, the track's last box area as the scale); with fewer than
``MIN_SHARED_JOINTS`` such joints it is the IoU of their boxes. Eligible pairs (OKS or IoU at
least its threshold) are taken greedily, most similar first, as mmpose's ``_track_by_oks``
and rtmlib's ``PoseTracker`` do (they go person by person; here the order is global). People
left over start new tracks; a track missing for more than ``max_age`` frames is dropped.

``OneEuroFilter`` is the filter of Casiez, Roussel and Vogel, "1 Euro Filter: A Simple
Speed-based Low-pass Filter for Noisy Input in Interactive Systems" (CHI 2012), elementwise
over an array; the tracker can smooth each track's keypoints with one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from hrnet_jax import errors

# With fewer joints confident in both a person and a track, their boxes' IoU is the similarity.
MIN_SHARED_JOINTS = 3


def _is_number(value: Any) -> bool:
  """Whether ``value`` is a finite real number (not a bool)."""
  return (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
          and math.isfinite(value))


def _smoothing_factor(dt: float, cutoff: np.ndarray | float) -> np.ndarray | float:
  """alpha = 1 / (1 + tau / dt), tau = 1 / (2 pi cutoff)."""
  tau = 1.0 / (2.0 * math.pi * cutoff)
  return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
  """The One-Euro filter (Casiez et al., CHI 2012), elementwise over an array of any shape."""

  def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
    for name, value, zero_ok in (('min_cutoff', min_cutoff, False), ('beta', beta, True),
                                 ('d_cutoff', d_cutoff, False)):
      if not _is_number(value) or not (value >= 0 if zero_ok else value > 0):
        raise errors.UserError(f'OneEuroFilter {name}={value!r}: expected a finite number, '
                               f'{"at least 0" if zero_ok else "positive"} (Hz)')
    self.min_cutoff = float(min_cutoff)
    self.beta = float(beta)
    self.d_cutoff = float(d_cutoff)
    self.reset()

  def reset(self) -> None:
    """Forgets the past: the next call returns its input unchanged."""
    self._x: np.ndarray | None = None  # the last filtered value
    self._dx: np.ndarray | None = None  # the last filtered derivative
    self._t: float | None = None

  def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
    """The filtered value of ``x`` at time ``t`` (seconds, increasing); float64, x's shape."""
    x = np.array(x, dtype=np.float64)
    if not _is_number(t):
      raise errors.UserError(f'OneEuroFilter timestamp t={t!r}: expected a finite number of '
                             f'seconds')
    t = float(t)
    if self._x is None:
      self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
      return x
    if x.shape != self._x.shape:
      raise errors.UserError(f'OneEuroFilter input of shape {x.shape}: expected the shape of '
                             f'the first input, {self._x.shape} (reset() to start over)')
    dt = t - self._t
    if dt <= 0:
      raise errors.UserError(f'OneEuroFilter timestamp t={t!r}: expected a time after the '
                             f'last one, {self._t!r}')
    dx = (x - self._x) / dt
    alpha_d = _smoothing_factor(dt, self.d_cutoff)
    dx_hat = alpha_d * dx + (1.0 - alpha_d) * self._dx
    cutoff = self.min_cutoff + self.beta * np.abs(dx_hat)
    alpha = _smoothing_factor(dt, cutoff)
    x_hat = alpha * x + (1.0 - alpha) * self._x
    self._x, self._dx, self._t = x_hat, dx_hat, t
    return x_hat.copy()


@dataclasses.dataclass(frozen=True)
class Tracked:
  """One frame's people, in input order: their track ids and (smoothed) keypoints."""
  track_ids: np.ndarray  # (N,) int64
  keypoints: np.ndarray  # (N, K, 2) float64


@dataclasses.dataclass
class _Track:
  """A live track: its id, last measurement (raw keypoints, scores, box) and filter."""
  track_id: int
  keypoints: np.ndarray  # (K, 2)
  scores: np.ndarray  # (K,)
  box: np.ndarray  # (4,) x, y, w, h
  last_frame: int
  smoother: OneEuroFilter | None


def box_iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
  """IoU of (N, 4) and (M, 4) boxes x, y, w, h: an (N, M) array (0 where the union is empty)."""
  a = np.asarray(boxes, np.float64)[:, None]
  b = np.asarray(others, np.float64)[None]
  w = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
  h = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
  inter = np.maximum(w, 0) * np.maximum(h, 0)
  union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _number(name: str, value: Any, low: float, high: float | None = None) -> float:
  if not _is_number(value) or value < low or (high is not None and value > high):
    bounds = f'in [{low}, {high}]' if high is not None else f'at least {low}'
    raise errors.UserError(f'PoseTracker {name}={value!r}: expected a number {bounds}')
  return float(value)


class PoseTracker:
  """Greedy OKS (IoU when few joints are confident) matching of each frame's people to tracks."""

  def __init__(self, sigmas: Sequence[float], *, oks_threshold: float = 0.3,
               iou_threshold: float = 0.3, max_age: int = 30, joint_threshold: float = 0.3,
               smoothing: dict | None = None):
    sigmas = np.array(sigmas, dtype=np.float64)
    if sigmas.ndim != 1 or sigmas.size == 0 or not np.all(np.isfinite(sigmas)) or (
        np.any(sigmas <= 0)):
      raise errors.UserError(f'PoseTracker sigmas of shape {sigmas.shape}: expected one '
                             f'positive OKS sigma per joint, e.g. a KeypointSet.sigmas')
    self.sigmas = sigmas
    self.oks_threshold = _number('oks_threshold', oks_threshold, 0.0, 1.0)
    self.iou_threshold = _number('iou_threshold', iou_threshold, 0.0, 1.0)
    if isinstance(max_age, bool) or not isinstance(max_age, (int, np.integer)) or max_age < 0:
      raise errors.UserError(f'PoseTracker max_age={max_age!r}: expected a whole number of '
                             f'frames, at least 0')
    self.max_age = int(max_age)
    self.joint_threshold = _number('joint_threshold', joint_threshold, -math.inf)
    if smoothing is not None:
      if not isinstance(smoothing, dict):
        raise errors.UserError(f'PoseTracker smoothing={smoothing!r}: expected None or a dict '
                               f'of OneEuroFilter arguments (min_cutoff, beta, d_cutoff)')
      unknown = sorted(set(smoothing) - {'min_cutoff', 'beta', 'd_cutoff'})
      if unknown:
        raise errors.UserError(f'PoseTracker smoothing has unknown key(s) {unknown}: expected '
                               f'OneEuroFilter arguments (min_cutoff, beta, d_cutoff)')
      OneEuroFilter(**smoothing)  # checks the values now rather than at the first track
      smoothing = dict(smoothing)
    self.smoothing = smoothing
    self.reset()

  @property
  def num_joints(self) -> int:
    return int(self.sigmas.size)

  @property
  def live_track_ids(self) -> tuple[int, ...]:
    """The ids of the tracks that can still be matched, oldest first."""
    return tuple(track.track_id for track in self._tracks)

  def reset(self) -> None:
    """Forgets every track; the next ids start at 0 again."""
    self._tracks: list[_Track] = []
    self._next_id = 0
    self._frame = -1
    self._timestamp: float | None = None

  def _check(self, keypoints, joint_scores, boxes, timestamp) -> tuple[np.ndarray, ...]:
    k = self.num_joints
    keypoints = np.array(keypoints, dtype=np.float64)  # copies: tracks keep rows of these
    if keypoints.ndim != 3 or keypoints.shape[1:] != (k, 2):
      raise errors.UserError(f'PoseTracker.update keypoints of shape {keypoints.shape}: '
                             f'expected (N, {k}, 2), x and y of the {k} joints of the sigmas')
    n = keypoints.shape[0]
    joint_scores = np.array(joint_scores, dtype=np.float64)
    if joint_scores.shape != (n, k):
      raise errors.UserError(f'PoseTracker.update joint_scores of shape {joint_scores.shape}: '
                             f'expected (N, K) = {(n, k)}, as the keypoints')
    boxes = np.array(boxes, dtype=np.float64)
    if boxes.shape != (n, 4):
      raise errors.UserError(f'PoseTracker.update boxes of shape {boxes.shape}: expected '
                             f'(N, 4) = {(n, 4)} boxes x, y, w, h')
    for name, values in (('keypoints', keypoints), ('joint_scores', joint_scores),
                         ('boxes', boxes)):
      if not np.all(np.isfinite(values)):
        raise errors.UserError(f'PoseTracker.update {name} hold NaN or infinite values: '
                               f'expected finite numbers')
    if np.any(boxes[:, 2:] < 0):
      raise errors.UserError(f'PoseTracker.update boxes with a negative width or height '
                             f'{boxes[np.any(boxes[:, 2:] < 0, axis=1)].tolist()}: expected '
                             f'boxes x, y, w, h with w, h >= 0')
    if not _is_number(timestamp):
      raise errors.UserError(f'PoseTracker.update timestamp={timestamp!r}: expected a finite '
                             f'number of seconds')
    if self._timestamp is not None and timestamp <= self._timestamp:
      raise errors.UserError(f'PoseTracker.update timestamp={timestamp!r}: expected a time '
                             f'after the last frame\'s, {self._timestamp!r}')
    return keypoints, joint_scores, boxes

  def _similarities(self, keypoints: np.ndarray, joint_scores: np.ndarray,
                    boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, T) similarities of the people to the live tracks, and whether each pair may match."""
    tracks = self._tracks
    n, t = keypoints.shape[0], len(tracks)
    if n == 0 or t == 0:
      return np.zeros((n, t)), np.zeros((n, t), bool)
    track_keypoints = np.stack([track.keypoints for track in tracks])  # (T, K, 2)
    track_scores = np.stack([track.scores for track in tracks])
    track_boxes = np.stack([track.box for track in tracks])
    shared = ((joint_scores > self.joint_threshold)[:, None]
              & (track_scores > self.joint_threshold)[None])  # (N, T, K)
    d2 = ((keypoints[:, None] - track_keypoints[None])**2).sum(-1)
    variances = (2 * self.sigmas)**2
    area = track_boxes[:, 2] * track_boxes[:, 3]  # COCO's scale: the track's last box area
    e = d2 / variances / (area[None, :, None] + np.spacing(1)) / 2
    count = shared.sum(-1)
    oks = np.where(shared, np.exp(-e), 0.0).sum(-1) / np.maximum(count, 1)
    iou = box_iou(boxes, track_boxes)
    by_oks = count >= MIN_SHARED_JOINTS
    similarity = np.where(by_oks, oks, iou)
    eligible = np.where(by_oks, oks >= self.oks_threshold, iou >= self.iou_threshold)
    return similarity, eligible

  def update(self, keypoints: np.ndarray, joint_scores: np.ndarray, boxes: np.ndarray,
             timestamp: float) -> Tracked:
    """Track ids (and keypoints, smoothed if on) of one frame's people, in input order.

    ``keypoints`` (N, K, 2), ``joint_scores`` (N, K), ``boxes`` (N, 4) x, y, w, h; ``timestamp``
    in seconds, increasing from frame to frame.
    """
    keypoints, joint_scores, boxes = self._check(keypoints, joint_scores, boxes, timestamp)
    self._frame += 1
    self._timestamp = float(timestamp)
    similarity, eligible = self._similarities(keypoints, joint_scores, boxes)
    person, column = np.nonzero(eligible)
    ids = np.array([self._tracks[j].track_id for j in column], dtype=np.int64)
    order = np.lexsort((ids, person, -similarity[person, column]))
    matched: dict[int, int] = {}  # person -> track index
    used: set[int] = set()
    for i, j in zip(person[order].tolist(), column[order].tolist()):
      if i not in matched and j not in used:
        matched[i] = j
        used.add(j)
    n = keypoints.shape[0]
    track_ids = np.empty(n, dtype=np.int64)
    out = keypoints.copy()
    for i in range(n):
      if i in matched:
        track = self._tracks[matched[i]]
        track.keypoints, track.scores, track.box = keypoints[i], joint_scores[i], boxes[i]
        track.last_frame = self._frame
      else:
        smoother = OneEuroFilter(**self.smoothing) if self.smoothing is not None else None
        track = _Track(self._next_id, keypoints[i], joint_scores[i], boxes[i], self._frame,
                       smoother)
        self._next_id += 1
        self._tracks.append(track)
      track_ids[i] = track.track_id
      if track.smoother is not None:
        out[i] = track.smoother(keypoints[i], self._timestamp)
    # Drop the tracks now missing from more than max_age frames in a row.
    self._tracks = [track for track in self._tracks
                    if self._frame - track.last_frame <= self.max_age]
    return Tracked(track_ids, out)
