"""Frames in and drawn frames out: images, folders, videos, cameras and streams.

``open_input(spec)`` reads an image file, a folder of images, a video file, a camera index
(``0``) or a stream URL (``rtsp://...``, ``http://...``) as ``Frame``s (BGR, OpenCV's order),
decoding on a thread beside the device work; ``open_output(path, source)`` writes drawn frames
on another thread: one image, a folder of images, or a video with the input's frame rate and
size. Neither overwrites anything that exists.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from hrnet_jax import errors, tasks

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg')
LIVE_KINDS = ('camera', 'stream')
DEFAULT_FPS = 30.0  # of a camera or stream that does not say its own
STREAM_TIMEOUT_MS = 10_000  # opening or reading a stream URL gives up after this
QUEUE_FRAMES = 8  # frames decoded ahead, or waiting to be written


@dataclasses.dataclass(frozen=True)
class Frame:
  """One image of an input."""
  index: int  # 0-based position in the input
  image_id: int  # the number in an image's file name (COCO style), else ``index``
  name: str  # the file name, or ``frame N``
  image: np.ndarray  # BGR uint8 (H, W, 3)
  timestamp: float  # seconds: index / fps (DEFAULT_FPS for a folder), time since opening for
                   # a live source


def image_id_of(path: str, position: int) -> int:
  """The number in a COCO-style file name (000000000139.jpg -> 139), else ``position``."""
  stem = os.path.splitext(os.path.basename(path))[0]
  return int(stem) if stem.isdigit() else position


def read_image(path: str) -> np.ndarray:
  """A BGR image with the pixels evaluation reads (``tasks.read_rgb``: EXIF orientation
  ignored, as officially), or an error naming the file."""
  return cv2.cvtColor(tasks.read_rgb(path), cv2.COLOR_RGB2BGR)


def _threaded(produce: Iterator[Any], size: int = QUEUE_FRAMES) -> Iterator[Any]:
  """``produce``'s items, computed on a thread up to ``size`` ahead; its errors re-raised."""
  items: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()
  done = object()

  def work():
    try:
      for item in produce:
        while not stop.is_set():
          try:
            items.put((item, None), timeout=0.1)
            break
          except queue.Full:
            continue
        if stop.is_set():
          return
      items.put((done, None))
    except BaseException as e:  # pylint: disable=broad-except  (re-raised by the reader)
      items.put((done, e))

  thread = threading.Thread(target=work, name='hrnet-jax-reader', daemon=True)
  thread.start()
  try:
    while True:
      item, error = items.get()
      if item is done:
        if error is not None:
          raise error
        return
      yield item
  finally:
    stop.set()
    thread.join(timeout=5)


class Input:
  """The frames of an image, folder, video, camera or stream; iterate for ``Frame``s."""

  def __init__(self, spec: str, kind: str, produce: Callable[[], Iterator[Frame]],
               count: int | None, fps: float, size: tuple[int, int] | None,
               release: Callable[[], None] = lambda: None):
    self.spec, self.kind, self.count, self.fps, self.size = spec, kind, count, fps, size
    self._produce, self._release = produce, release

  @property
  def live(self) -> bool:
    """Whether frames arrive as they are captured (a camera or a stream)."""
    return self.kind in LIVE_KINDS

  def __iter__(self) -> Iterator[Frame]:
    try:
      yield from _threaded(self._produce())
    finally:
      self._release()

  def describe(self) -> str:
    """E.g. ``video x.mp4: 150 frames of 640x480 at 30 fps``."""
    what = f'{self.count} frame(s)' if self.count is not None else 'frames'
    size = f' of {self.size[0]}x{self.size[1]}' if self.size else ''
    rate = f' at {self.fps:g} fps' if self.fps else ''
    return f'{self.kind} {self.spec}: {what}{size}{rate}'


def _is_camera(spec: str) -> bool:
  return spec.isdigit()


def _is_stream(spec: str) -> bool:
  return '://' in spec


def open_input(spec: str | int) -> Input:
  """The input named by ``spec``: an image, a folder, a video, a camera index or a URL."""
  spec = os.fspath(spec) if not isinstance(spec, int) else str(spec)
  if _is_camera(spec) or _is_stream(spec):
    return _capture(spec)
  if os.path.isdir(spec):
    names = sorted(n for n in os.listdir(spec) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
      raise errors.MissingFileError(f'{spec}: no images ({", ".join(IMAGE_EXTENSIONS)})')

    def folder():
      for i, name in enumerate(names):
        yield Frame(i, image_id_of(name, i), name, read_image(os.path.join(spec, name)),
                    i / DEFAULT_FPS)
    return Input(spec, 'folder', folder, len(names), 0.0, None)
  if not os.path.exists(spec):
    raise errors.MissingFileError(f'input {spec} does not exist (expected an image, a folder '
                                  f'of images, a video, a camera index such as 0 or a URL)')
  if spec.lower().endswith(VIDEO_EXTENSIONS):
    return _capture(spec)
  if not spec.lower().endswith(IMAGE_EXTENSIONS):
    raise errors.UserError(f'{spec}: expected an image ({", ".join(IMAGE_EXTENSIONS)}) or a '
                           f'video ({", ".join(VIDEO_EXTENSIONS)})')
  image = read_image(spec)
  name = os.path.basename(spec)
  return Input(spec, 'image', lambda: iter([Frame(0, image_id_of(name, 0), name, image, 0.0)]),
               1, 0.0, (image.shape[1], image.shape[0]))


def _capture(spec: str) -> Input:
  """A video file, camera or stream through ``cv2.VideoCapture``."""
  if _is_camera(spec):
    kind, capture = 'camera', cv2.VideoCapture(int(spec))
  elif _is_stream(spec):
    kind = 'stream'
    capture = cv2.VideoCapture(spec, cv2.CAP_FFMPEG,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                                cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS])
  else:
    kind, capture = 'video', cv2.VideoCapture(spec)
  if not capture.isOpened():
    capture.release()
    if kind == 'camera':
      found = sorted(n for n in os.listdir('/dev') if n.startswith('video')) if os.path.isdir(
          '/dev') else []
      raise errors.UserError(
          f'camera {spec} cannot be opened (no such camera, or it is busy); cameras this '
          f'machine lists: {", ".join("/dev/" + n for n in found) or "none"}')
    raise errors.UserError(f'{spec}: OpenCV cannot open this {kind}')
  count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if kind == 'video' else None
  fps = capture.get(cv2.CAP_PROP_FPS)
  fps = fps if fps and 0 < fps < 1000 else DEFAULT_FPS
  size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
  lock = threading.Lock()

  def frames():
    start, index = time.monotonic(), 0
    while True:
      with lock:
        ok, image = capture.read() if capture.isOpened() else (False, None)
      if not ok:
        return
      stamp = index / fps if kind == 'video' else time.monotonic() - start
      yield Frame(index, index, f'frame {index}', image, stamp)
      index += 1

  def release():
    with lock:
      capture.release()
  return Input(spec, kind, frames, count, fps, size if size[0] > 0 else None, release)


class Output:
  """Writes drawn frames on a thread: ``write(frame, drawn)``, then ``close()``."""

  def __init__(self, path: str, kind: str, fps: float):
    self.path, self.kind, self.fps = path, kind, fps
    self._writer = None
    self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
    self._error: BaseException | None = None
    self._thread = threading.Thread(target=self._work, name='hrnet-jax-writer', daemon=True)
    self._thread.start()

  def write(self, frame: Frame, drawn: np.ndarray) -> None:
    """Queues a drawn frame (BGR) for writing; raises a writing error of an earlier frame."""
    self._raise()
    self._queue.put((frame, drawn))

  def close(self) -> None:
    """Writes what is queued and closes the file; raises a writing error."""
    if self._thread.is_alive():
      self._queue.put(None)
      self._thread.join()
    self._raise()

  def _raise(self) -> None:
    if self._error is not None:
      error, self._error = self._error, None
      raise error

  def _work(self) -> None:
    while True:
      item = self._queue.get()
      if item is None:
        break
      if self._error is not None:
        continue  # drain: the caller sees the first error
      try:
        self._write(*item)
      except BaseException as e:  # pylint: disable=broad-except  (raised by write/close)
        self._error = e
    if self._writer is not None:
      self._writer.release()

  def _write(self, frame: Frame, drawn: np.ndarray) -> None:
    if self.kind == 'folder':
      target = os.path.join(self.path, os.path.splitext(frame.name)[0] + '.jpg')
    elif self.kind == 'image':
      target = self.path
    else:
      if self._writer is None:
        self._writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*'mp4v'), self.fps,
                                       (drawn.shape[1], drawn.shape[0]))
        if not self._writer.isOpened():
          raise errors.UserError(f'{self.path}: OpenCV cannot write a video here (expected a '
                                 f'writable .mp4 path)')
      self._writer.write(drawn)
      return
    try:
      written = cv2.imwrite(target, drawn)
    except cv2.error:  # OpenCV 5 raises for an extension it has no writer for
      written = False
    if not written:
      raise errors.UserError(f'{target}: OpenCV cannot write an image with this extension '
                             f'here (expected .jpg, .png, ...)')


def output_kind(source: Input) -> str:
  """What ``source``'s drawn frames become: 'image', 'folder' or 'video'."""
  return source.kind if source.kind in ('image', 'folder') else 'video'


def open_output(path: str, source: Input) -> Output:
  """A writer for ``source``'s drawn frames at ``path``; refuses a path that exists (a folder
  only if it is not empty)."""
  kind = output_kind(source)
  if os.path.exists(path) and (kind != 'folder' or os.listdir(path)):
    raise errors.ExistingFileError(f'{path} already exists; refusing to overwrite it')
  if kind == 'folder':
    os.makedirs(path, exist_ok=True)
  elif os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  return Output(path, kind, source.fps)
