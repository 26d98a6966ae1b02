"""Person detectors run by ONNX Runtime: YOLOX and RTMDet models as exported by mmdeploy.

The models are OpenMMLab's (mmdet / mmpose: YOLOX trained on Human-Art + COCO, RTMDet trained
on COCO + Objects365 people), exported to ONNX by mmdeploy and published as the "onnx_sdk"
zips that rtmlib (github.com/Tau-J/rtmlib) downloads; ``DETECTORS`` lists them by name and
``detector_path(name)`` downloads a zip once and extracts its ``end2end.onnx`` to
``<cache>/detectors/<name>.onnx``, which later calls use with no network.

``OnnxDetector(model)`` runs one on an RGB image with rtmlib's pre-processing: the image in
OpenCV's BGR order (the models were trained and exported on BGR), letterboxed to the model's
input (resized keeping its aspect ratio, bilinear, padded bottom and right with 114), as is
for YOLOX and normalised for RTMDet (BGR mean 103.53, 116.28, 123.675, std 57.375, 57.12,
58.395). Two output formats are read:

- with NMS (mmdeploy's end2end graphs, every registered model): ``dets`` (1, N, 5) x1, y1,
  x2, y2, score and ``labels`` (1, N), in input pixels;
- YOLOX without NMS (YOLOX's own export): one (1, A, 5 + C) array of grid offsets, log sizes,
  objectness and class scores over the stride 8, 16 and 32 grids, decoded here; the person
  scores (objectness x class 0) are thresholded and merged by NMS.

Only class 0 (person) is kept. The boxes are mapped back to the image (divided by the
letterbox ratio), clipped to it, and returned best first as ``detectors.Detector`` does.

onnxruntime is imported only when a detector is built (``pip install onnxruntime``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import tempfile
import zipfile
from typing import Any, Sequence

from absl import logging
import cv2
import numpy as np

from hrnet_jax import errors

ARCHITECTURES = ('yolox', 'rtmdet')
PAD_VALUE = 114
RTMDET_MEAN = (103.53, 116.28, 123.675)  # B, G, R
RTMDET_STD = (57.375, 57.12, 58.395)
STRIDES = (8, 16, 32)  # YOLOX's grids
DEFAULT_SCORE_THRESHOLD = 0.3  # rtmlib keeps the boxes of an end2end graph scoring above 0.3
DETECTORS_DIR = 'detectors'
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class DetectorModel:
  """A published person detector: an mmdeploy onnx_sdk zip and what its graph expects.

  ``sha256`` is the zip's digest and ``onnx_sha256`` the extracted graph's (full or prefix;
  None where no digest is known). The 8 hex digits in an onnx_sdk file name are NOT the zip's:
  they are the sha256 prefix of the PyTorch checkpoint it was exported from.
  """
  name: str
  url: str
  architecture: str  # one of ARCHITECTURES
  input_size: tuple[int, int]  # (height, width) of the graph's input
  score_threshold: float = DEFAULT_SCORE_THRESHOLD
  member: str = 'end2end.onnx'  # the graph's file name inside the zip (in a folder)
  sha256: str | None = None
  onnx_sha256: str | None = None
  trained_on: str = ''
  reported: str = ''  # the publisher's person AP
  source: str = ''  # where the URL and numbers are published

  @property
  def file_name(self) -> str:
    """The zip's file name in the downloads folder."""
    return os.path.basename(self.url.split('?', 1)[0].split('#', 1)[0])


DETECTORS: dict[str, DetectorModel] = {}


def register(model: DetectorModel) -> DetectorModel:
  """Adds ``model`` to ``DETECTORS``; names are unique."""
  if model.name in DETECTORS:
    raise ValueError(f'detector {model.name!r} registered twice')
  if model.architecture not in ARCHITECTURES:
    raise ValueError(f'{model.name}: architecture {model.architecture!r} is not one of '
                     f'{ARCHITECTURES}')
  DETECTORS[model.name] = model
  return model


def is_detector_name(spec: str) -> bool:
  """Whether ``spec`` names a registered detector (and is not an existing path)."""
  return spec in DETECTORS and not os.path.exists(spec)


def get(name: str) -> DetectorModel:
  """The registered detector ``name``, or an error listing the closest names."""
  if name not in DETECTORS:
    close = difflib.get_close_matches(name, DETECTORS, n=3, cutoff=0.5)
    hint = f'; did you mean {", ".join(close)}?' if close else ''
    raise errors.MissingFileError(
        f'detector {name!r} is neither an existing .onnx file nor a detector name{hint} '
        f'(detector names: {", ".join(DETECTORS)})')
  return DETECTORS[name]


# ----------------------------------------------------------------------- download, extract

def _zoo():
  # Imported when first needed: the zoo's cache helpers import TensorFlow and JAX.
  from hrnet_jax import zoo  # pylint: disable=g-import-not-at-top
  return zoo


def detector_path(name: str | DetectorModel, offline: bool | None = None) -> str:
  """The local .onnx of a registered detector: its zip downloaded (verified, cached) and its
  graph extracted once to ``<cache>/detectors/<name>.onnx``, read with no network after."""
  zoo = _zoo()
  model = name if isinstance(name, DetectorModel) else get(name)
  folder = os.path.join(zoo.cache_dir(), DETECTORS_DIR)
  destination = os.path.join(folder, f'{model.name}.onnx')
  if os.path.isfile(destination):
    return destination
  archive = _fetch_zip(model, offline)
  try:
    _extract(model, archive, folder, destination)
  except errors.UserError:
    if not model.sha256 and os.path.exists(archive):
      os.remove(archive)  # unverified and unusable: a retry downloads it again
    raise
  return destination


def _fetch_zip(model: DetectorModel, offline: bool | None) -> str:
  """The downloaded zip of ``model``: checked against ``model.sha256`` by the zoo's download,
  else (no published digest) checked afterwards through its graph's ``onnx_sha256``."""
  zoo = _zoo()
  if model.sha256:
    return zoo.download(model.url, sha256=model.sha256, file_name=model.file_name,
                        offline=offline)
  archive = os.path.join(zoo.cache_dir(), zoo.DOWNLOADS_DIR, model.file_name)
  if os.path.exists(archive):
    return archive
  if zoo.is_offline(offline):
    raise errors.MissingFileError(
        f'{model.file_name} is not in the cache and downloads are off ({zoo.OFFLINE_ENV} or '
        f'offline=True): place the file from {model.url} at {archive}')
  if not model.onnx_sha256:
    raise errors.MissingFileError(
        f'{model.name}: no published sha256 to verify a download against, so it is not '
        f'downloaded automatically: download {model.url} yourself and place it at {archive} '
        f'(or pass the path of its extracted {model.member})')
  # The zoo's download (temporary file, renamed when complete) with no digest of the zip to
  # check it against: _extract checks the graph's.
  zoo.download_to(model.url, archive, None)
  return archive


def _extract(model: DetectorModel, archive: str, folder: str, destination: str) -> None:
  """Writes the graph of ``archive`` to ``destination`` through a temporary file, renamed
  only once the graph's sha256 matches ``model.onnx_sha256`` (if known)."""
  try:
    with zipfile.ZipFile(archive) as z:
      members = [m for m in z.namelist() if os.path.basename(m) == model.member]
      if len(members) != 1:
        raise errors.UserError(
            f'{archive}: expected one {model.member} in the zip, found {len(members)} '
            f'(its files: {", ".join(z.namelist()[:20])})')
      os.makedirs(folder, exist_ok=True)
      fd, tmp = tempfile.mkstemp(prefix=f'.{model.name}.', suffix='.part', dir=folder)
      try:
        digest = hashlib.sha256()
        with z.open(members[0]) as source, os.fdopen(fd, 'wb') as target:
          for block in iter(lambda: source.read(_CHUNK), b''):
            digest.update(block)
            target.write(block)
        actual = digest.hexdigest()
        if model.onnx_sha256 and not actual.startswith(model.onnx_sha256.lower()):
          raise errors.UserError(
              f'{members[0]} of {model.url}: sha256 mismatch: expected {model.onnx_sha256}, '
              f'got {actual} (nothing was written to {destination})')
        if not (model.sha256 or model.onnx_sha256):  # a zip placed in the cache by hand
          logging.warning('%s: no known hash to check; its sha256 is %s, its %s\'s %s',
                          archive, _zoo().file_sha256(archive), model.member, actual)
        os.replace(tmp, destination)
      finally:
        if os.path.exists(tmp):
          os.remove(tmp)
  except zipfile.BadZipFile as e:
    raise errors.UserError(f'{archive} is not a valid zip file: {e}') from e


# ------------------------------------------------------------------------ pre-processing

def letterbox(image: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, float]:
  """``image`` resized to fit ``input_size`` (height, width) keeping its aspect ratio
  (bilinear), at the top left of a canvas of 114s; and the ratio (rtmlib's and YOLOX's)."""
  height, width = input_size
  if image.shape[:2] == (height, width):
    return image.copy(), 1.0
  ratio = min(height / image.shape[0], width / image.shape[1])
  new_height, new_width = int(image.shape[0] * ratio), int(image.shape[1] * ratio)
  resized = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
  padded = np.full((height, width) + image.shape[2:], PAD_VALUE, np.uint8)
  padded[:new_height, :new_width] = resized
  return padded, ratio


def preprocess(image_rgb: np.ndarray, input_size: tuple[int, int],
               architecture: str) -> tuple[np.ndarray, float]:
  """The (1, 3, height, width) float32 input of an RGB uint8 image (letterboxed in BGR
  order, RTMDet's normalised) and the letterbox ratio."""
  bgr = np.ascontiguousarray(image_rgb[..., ::-1])
  padded, ratio = letterbox(bgr, input_size)
  x = padded.astype(np.float32)
  if architecture == 'rtmdet':
    x = ((x - np.asarray(RTMDET_MEAN, np.float32)) / np.asarray(RTMDET_STD, np.float32))
  return np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32), ratio


def decode_yolox(raw: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """Boxes (A, 4) x1, y1, x2, y2 in input pixels and person scores (A,) of YOLOX's raw
  (A, 5 + C) output: centre offsets and log sizes on the stride 8, 16, 32 grids,
  objectness, class scores (sigmoids already applied in the graph)."""
  height, width = input_size
  grids, strides = [], []
  for stride in STRIDES:
    xs, ys = np.meshgrid(np.arange(width // stride), np.arange(height // stride))
    grids.append(np.stack([xs, ys], axis=-1).reshape(-1, 2))
    strides.append(np.full((grids[-1].shape[0], 1), stride))
  grid, stride = np.concatenate(grids).astype(np.float64), np.concatenate(strides)
  if raw.ndim != 2 or raw.shape[0] != grid.shape[0] or raw.shape[1] < 6:
    raise errors.UserError(
        f'YOLOX output of shape {raw.shape}: expected ({grid.shape[0]}, 5 + classes), the '
        f'anchors of strides {STRIDES} on a {height}x{width} input')
  raw = raw.astype(np.float64)
  centres = (raw[:, :2] + grid) * stride
  sizes = np.exp(raw[:, 2:4]) * stride
  boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
  return boxes, raw[:, 4] * raw[:, 5]


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
  """Indices of the boxes (x1, y1, x2, y2) kept by greedy NMS, best first: a box is dropped
  if its IoU with a better kept one is above ``threshold`` (rtmlib's rule, without its +1)."""
  areas = (np.clip(boxes[:, 2] - boxes[:, 0], 0, None) *
           np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
  order, keep = np.argsort(-scores, kind='stable'), []
  while order.size:
    best, rest = order[0], order[1:]
    keep.append(best)
    width = (np.minimum(boxes[best, 2], boxes[rest, 2]) -
             np.maximum(boxes[best, 0], boxes[rest, 0]))
    height = (np.minimum(boxes[best, 3], boxes[rest, 3]) -
              np.maximum(boxes[best, 1], boxes[rest, 1]))
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-12)
    order = rest[iou <= threshold]
  return np.asarray(keep, np.int64)


# ------------------------------------------------------------------------------ detector

def _onnxruntime():
  try:
    import onnxruntime  # pylint: disable=g-import-not-at-top  (an optional dependency)
  except ImportError as e:
    raise errors.UserError(
        f'ONNX person detectors need onnxruntime: pip install onnxruntime ({e})') from e
  return onnxruntime


def _architecture_of(path: str, architecture: str | None, registered: str | None) -> str:
  if architecture is not None:
    if architecture not in ARCHITECTURES:
      raise errors.UserError(f'detector architecture {architecture!r}: expected one of '
                             f'{", ".join(ARCHITECTURES)}')
    if registered and architecture != registered:
      raise errors.UserError(f'{path} is a {registered} model, not {architecture}')
    return architecture
  if registered:
    return registered
  found = [a for a in ARCHITECTURES if a in os.path.basename(path).lower()]
  if len(found) != 1:
    raise errors.UserError(
        f'{path}: cannot tell its architecture from its name; pass architecture= one of '
        f'{", ".join(ARCHITECTURES)} (YOLOX takes 0..255 pixels, RTMDet normalised ones)')
  return found[0]


def _static_size(shape: Sequence[Any]) -> tuple[int, int] | None:
  dims = list(shape)[2:4]
  if len(dims) == 2 and all(isinstance(d, int) and d > 0 for d in dims):
    return int(dims[0]), int(dims[1])
  return None


class OnnxDetector:
  """A YOLOX or RTMDet person detector run by ONNX Runtime (``detectors.Detector``).

  ``model`` is a .onnx file or a name of ``DETECTORS`` (downloaded once). ``architecture``
  ('yolox' or 'rtmdet') is guessed from a file's name; ``input_size`` (height, width) is the
  graph's if static, else the registered model's. Boxes scoring at least ``score_threshold``
  (default: the registered model's, else 0.3) are kept; ``nms_threshold`` is the IoU of the
  NMS applied to a YOLOX graph without one. ``providers``: ONNX Runtime's execution providers.
  """

  def __init__(self, model: str, *, architecture: str | None = None,
               input_size: tuple[int, int] | None = None, score_threshold: float | None = None,
               nms_threshold: float = 0.45, offline: bool | None = None,
               providers: Sequence[Any] | None = None):
    model = os.fspath(model)
    registered = get(model) if is_detector_name(model) else None
    if registered is None and not os.path.isfile(model):
      if os.path.isdir(model):
        raise errors.UserError(f'detector model {model} is a folder: expected a .onnx file')
      if model.endswith('.onnx') or os.sep in model:
        raise errors.MissingFileError(f'detector model {model} does not exist')
      get(model)  # the error listing the names
    self.architecture = _architecture_of(model, architecture,
                                         registered.architecture if registered else None)
    ort = _onnxruntime()
    self.path = detector_path(registered, offline=offline) if registered else model
    try:
      self.session = ort.InferenceSession(self.path,
                                          providers=list(providers or ['CPUExecutionProvider']))
    except Exception as e:  # onnxruntime's InvalidProtobuf, Fail, NotImplemented ...
      raise errors.UserError(
          f'{self.path} is not a valid ONNX model ONNX Runtime can run: {e}') from e
    inputs = self.session.get_inputs()
    if (len(inputs) != 1 or len(inputs[0].shape) != 4 or
        isinstance(inputs[0].shape[1], int) and inputs[0].shape[1] != 3):
      raise errors.UserError(
          f'{self.path}: expected one (1, 3, height, width) image input, got '
          f'{[(i.name, i.shape) for i in inputs]}')
    self._input_name = inputs[0].name
    self._output_names = [o.name for o in self.session.get_outputs()]
    graph_size = _static_size(inputs[0].shape)
    if input_size is not None:
      input_size = tuple(int(s) for s in input_size)
      if len(input_size) != 2 or min(input_size) <= 0:
        raise errors.UserError(f'detector input_size {input_size}: expected (height, width)')
      if graph_size and input_size != graph_size:
        raise errors.UserError(f'{self.path} takes {graph_size[0]}x{graph_size[1]} images '
                               f'(height x width), not input_size {input_size}')
    self.input_size = (input_size or graph_size or
                       (registered.input_size if registered else None))
    if self.input_size is None:
      raise errors.UserError(f'{self.path} has no fixed input size: pass input_size=(height, '
                             f'width)')
    self.score_threshold = float(
        score_threshold if score_threshold is not None else
        registered.score_threshold if registered else DEFAULT_SCORE_THRESHOLD)
    self.nms_threshold = nms_threshold

  def __call__(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes (N, 4) x, y, w, h and scores (N,) of an RGB uint8 image, best first."""
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
      raise errors.UserError(f'detector input of shape {image_rgb.shape}: expected an '
                             f'(height, width, 3) RGB image')
    height, width = image_rgb.shape[:2]
    batch, ratio = preprocess(image_rgb, self.input_size, self.architecture)
    outputs = dict(zip(self._output_names,
                       self.session.run(None, {self._input_name: batch})))
    boxes, scores = self._people(outputs)
    keep = scores >= self.score_threshold
    boxes, scores = boxes[keep] / ratio, scores[keep]
    x0 = np.clip(boxes[:, 0], 0, width)
    y0 = np.clip(boxes[:, 1], 0, height)
    x1 = np.clip(boxes[:, 2], 0, width)
    y1 = np.clip(boxes[:, 3], 0, height)
    boxes = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
    seen = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)  # not wholly in the padding
    boxes, scores = boxes[seen], scores[seen]
    order = np.argsort(-scores, kind='stable')
    return boxes[order].astype(np.float64), scores[order].astype(np.float64)

  def _people(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The person boxes x1, y1, x2, y2 (input pixels) and scores of the graph's outputs."""
    first = outputs.get('dets', outputs[self._output_names[0]])
    shapes = {name: np.shape(value) for name, value in outputs.items()}
    if first.ndim == 3 and first.shape[0] == 1 and first.shape[2] == 5:  # NMS in the graph
      dets = first[0].astype(np.float64)
      labels = outputs.get('labels')
      if labels is None:
        others = [v for n, v in outputs.items() if v is not first]
        labels = others[0] if others else np.zeros((1, len(dets)), np.int64)
      labels = np.asarray(labels).reshape(-1)
      if labels.shape[0] != dets.shape[0]:
        raise errors.UserError(f'{self.path}: {dets.shape[0]} boxes but {labels.shape[0]} '
                               f'labels (outputs {shapes})')
      person = labels == 0
      return dets[person, :4], dets[person, 4]
    if first.ndim == 3 and first.shape[0] == 1 and first.shape[2] > 5:
      if self.architecture != 'yolox':
        raise errors.UserError(
            f'{self.path}: an {self.architecture} graph without NMS (outputs {shapes}) is not '
            f'supported; export it with NMS (mmdeploy end2end: dets, labels)')
      boxes, scores = decode_yolox(first[0], self.input_size)
      keep = scores >= self.score_threshold
      boxes, scores = boxes[keep], scores[keep]
      keep = _nms(boxes, scores, self.nms_threshold)
      return boxes[keep], scores[keep]
    raise errors.UserError(
        f'{self.path}: outputs {shapes}: expected dets (1, N, 5) with labels (1, N), or '
        f'YOLOX\'s raw (1, anchors, 5 + classes)')


# ----------------------------------------------------------------------------- the registry

_ONNX_SDK = 'https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/onnx_sdk/'
_RTMLIB = 'https://github.com/Tau-J/rtmlib#model-zoo'
_RTMPOSE = 'https://github.com/open-mmlab/mmpose/tree/main/projects/rtmpose'

# rtmlib's person detectors (its README's table; Body's modes: tiny 'lightweight', m
# 'balanced', x 'performance'): YOLOX (80-class heads, person = class 0) trained on Human-Art
# + COCO. (size, file, input, person AP on Human-Art, zip sha256, end2end.onnx sha256)
# The digests were published by projects that pin these downloads; none was measured here.
_YOLOX_HUMANART = (
    ('nano', 'yolox_nano_8xb8-300e_humanart-40f6f0d0.zip', 416, 38.9, None, None),
    ('tiny', 'yolox_tiny_8xb8-300e_humanart-6f3252f9.zip', 416, 47.7,
     '36e09ca555916253fa1b5d51bec01e48e98e1f0af966c51ce3e844d8c8fc4cfc',
     'ceb11c07298f95c50d7c5abeb906d03340c85f23aa79e3e66966e7fb6c307250'),
    ('s', 'yolox_s_8xb8-300e_humanart-3ef259a7.zip', 640, 54.6, None, None),
    ('m', 'yolox_m_8xb8-300e_humanart-c2c7a14a.zip', 640, 59.1, None,
     '3dea6513388889f0fff4b77bf7a26013600321b9eb9ceb0e9a400a82572f5f23'),
    ('l', 'yolox_l_8xb8-300e_humanart-ce1d7a62.zip', 640, 60.2, None, None),
    ('x', 'yolox_x_8xb8-300e_humanart-a39d44ed.zip', 640, 61.3, None, None),
)
for _size, _file, _side, _ap, _zip_sha, _onnx_sha in _YOLOX_HUMANART:
  register(DetectorModel(
      name=f'yolox_{_size}_humanart', url=_ONNX_SDK + _file, architecture='yolox',
      input_size=(_side, _side), sha256=_zip_sha, onnx_sha256=_onnx_sha,
      trained_on='Human-Art + COCO', reported=f'AP {_ap} (Human-Art person)', source=_RTMLIB))

# RTMPose's default person detector (mmpose's RTMDet-nano, one class), as an onnx_sdk zip.
register(DetectorModel(
    name='rtmdet_nano_person',
    url=_ONNX_SDK + 'rtmdet_nano_8xb32-100e_coco-obj365-person-05d8511e.zip',
    architecture='rtmdet', input_size=(320, 320),
    onnx_sha256='8297e829ccc5590c8e2d32d5a211f322a0585fb7467eec85eb12c9525b0b95d6',
    trained_on='COCO + Objects365 people', reported='AP 40.3 (COCO val person)',
    source=_RTMPOSE))


def markdown_table() -> str:
  """The registered detectors as a markdown table."""
  rows = ['| Name | Architecture | Input (h x w) | Trained on | Publisher reports | Weights |',
          '| --- | --- | --- | --- | --- | --- |']
  for m in DETECTORS.values():
    how = 'downloaded, sha256 checked' if m.sha256 or m.onnx_sha256 else 'by hand (no digest)'
    rows.append(f'| `{m.name}` | {m.architecture} | {m.input_size[0]}x{m.input_size[1]} | '
                f'{m.trained_on or "-"} | {m.reported or "-"} | [onnx_sdk zip]({m.url}): {how} |')
  return '\n'.join(rows)


if __name__ == '__main__':
  print(markdown_table())
