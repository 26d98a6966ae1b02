"""ONNX Runtime person detectors: tiny ONNX graphs built here in both output formats, run on a
real photo; rtmlib's pre-processing; the registry's download over a real HTTP server on
127.0.0.1, its hash checks, cache and offline use; the errors."""

import functools
import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile

import cv2
import numpy as np
import pytest

import onnx  # requirements-dev.txt: onnx builds the graphs, onnxruntime runs them
from onnx import helper, TensorProto

from conftest import FIXTURES, OFFICIAL, REPO
from hrnet_jax import PoseEstimator, errors, onnx_detectors

PHOTO = os.path.join(FIXTURES, 'real_data', 'coco', '000000000785.jpg')
INPUT = (96, 64)  # (height, width): a portrait input for a landscape photo (640 x 425)
RATIO = 0.1  # min(96 / 425, 64 / 640)


def photo_rgb():
  image = cv2.imread(PHOTO)
  assert image.shape == (425, 640, 3)
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def constant(name, value):
  value = np.asarray(value)
  return helper.make_node('Constant', [], [name], value=onnx.numpy_helper.from_array(value))


def graph_bytes(outputs, size=INPUT, score_from_input=False):
  """An ONNX graph with one (1, 3, *size) float32 input ``input`` whose outputs are the
  constant arrays ``outputs`` (name -> array); the float ones get ``sum(input) * 0`` added so
  that the input is used. ``score_from_input``: ``dets`` is one box scored ``mean(input)``."""
  nodes = [helper.make_node('ReduceSum', ['input'], ['total'], keepdims=0),
           constant('zero_f', np.float32(0)),
           helper.make_node('Mul', ['total', 'zero_f'], ['zero'])]
  infos = []
  for name, value in outputs.items():
    value = np.asarray(value)
    nodes.append(constant(f'{name}_c', value))
    if value.dtype == np.float32:
      nodes.append(helper.make_node('Add', [f'{name}_c', 'zero'], [name]))
    else:
      nodes.append(helper.make_node('Identity', [f'{name}_c'], [name]))
    infos.append(helper.make_tensor_value_info(
        name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
  if score_from_input:
    nodes += [helper.make_node('ReduceMean', ['input'], ['mean'], keepdims=1),
              constant('shape', np.asarray([1, 1, 1], np.int64)),
              helper.make_node('Reshape', ['mean', 'shape'], ['score']),
              constant('box', np.asarray([[[10, 5, 30, 40]]], np.float32)),
              helper.make_node('Concat', ['box', 'score'], ['dets'], axis=2)]
    infos.append(helper.make_tensor_value_info('dets', TensorProto.FLOAT, [1, 1, 5]))
  graph = helper.make_graph(
      nodes, 'tiny_detector',
      [helper.make_tensor_value_info('input', TensorProto.FLOAT, [1, 3, *size])], infos)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
  model.ir_version = 8
  onnx.checker.check_model(model)
  return model.SerializeToString()


def write(path, data):
  path.write_bytes(data)
  return str(path)


def assert_boxes(found, expected_boxes, expected_scores):
  boxes, scores = found
  assert boxes.dtype == np.float64 and scores.dtype == np.float64
  np.testing.assert_allclose(boxes, np.asarray(expected_boxes, np.float64).reshape(-1, 4),
                             atol=1.0)
  np.testing.assert_allclose(scores, expected_scores, atol=1e-6)


# ----------------------------------------------------------------------- the two formats

def test_graph_with_nms_gives_the_person_boxes_in_image_pixels(tmp_path):
  dets = np.asarray([[
      [10, 5, 30, 40, 0.9],  # person -> image (100, 50, 300, 400)
      [40, 10, 60, 30, 0.95],  # person, best
      [5, 5, 20, 20, 0.99],  # label 1: not a person
      [20, 20, 40, 40, 0.2],  # below the threshold
      [30, 30, 50, 60, 0.5],  # reaches into the padding: clipped to the image's 425 rows
      [0, 50, 10, 60, 0.8],  # wholly in the padding
      [0, 0, 0, 0, 0],  # a padding row (labels -1), as mmdeploy's GPU graphs give
  ]], np.float32)
  labels = np.asarray([[0, 0, 1, 0, 0, 0, -1]], np.int64)
  path = write(tmp_path / 'tiny_yolox.onnx', graph_bytes({'dets': dets, 'labels': labels}))
  detector = onnx_detectors.OnnxDetector(path)
  assert detector.architecture == 'yolox' and detector.input_size == INPUT
  assert detector.score_threshold == 0.3
  assert_boxes(detector(photo_rgb()),
               [[400, 100, 200, 200], [100, 50, 200, 350], [300, 300, 200, 125]],
               [0.95, 0.9, 0.5])
  # The threshold is inclusive; an RTMDet graph reads the same outputs.
  detector = onnx_detectors.OnnxDetector(path, architecture='rtmdet', score_threshold=0.2)
  assert_boxes(detector(photo_rgb()), [[400, 100, 200, 200], [100, 50, 200, 350],
                                       [300, 300, 200, 125], [200, 200, 200, 200]],
               [0.95, 0.9, 0.5, 0.2])


def test_the_estimator_takes_an_onnx_detector_by_path(tmp_path):
  dets = np.asarray([[[10, 5, 30, 40, 0.9], [40, 10, 60, 30, 0.95]]], np.float32)
  path = write(tmp_path / 'tiny_yolox.onnx', graph_bytes(
      {'dets': dets, 'labels': np.zeros((1, 2), np.int64)}))
  estimator = PoseEstimator(os.path.join(OFFICIAL, 'small_hrnet.pth'),
                            config=os.path.join(REPO, 'configs', 'small_hrnet.py'),
                            detector=path)
  assert isinstance(estimator.detector, onnx_detectors.OnnxDetector)
  people = estimator(PHOTO)
  # The detector's boxes, best first, in image pixels (1 px: the letterbox's rounding).
  np.testing.assert_allclose([p.box for p in people], [[400, 100, 200, 200],
                                                       [100, 50, 200, 350]], atol=1.0)
  assert all(p.keypoints.shape == (17, 2) for p in people)


def test_empty_detections(tmp_path):
  path = write(tmp_path / 'empty_rtmdet.onnx', graph_bytes(
      {'dets': np.zeros((1, 0, 5), np.float32), 'labels': np.zeros((1, 0), np.int64)}))
  boxes, scores = onnx_detectors.OnnxDetector(path)(photo_rgb())
  assert boxes.shape == (0, 4) and scores.shape == (0,)


def anchor(stride, x, y, size=INPUT):
  """The row of the anchor at grid cell (x, y) of ``stride`` in YOLOX's raw output."""
  row = 0
  for s in onnx_detectors.STRIDES:
    if s == stride:
      return row + y * (size[1] // s) + x
    row += (size[0] // s) * (size[1] // s)
  raise ValueError(stride)


def test_yolox_without_nms_is_decoded_thresholded_and_merged(tmp_path):
  anchors = sum((INPUT[0] // s) * (INPUT[1] // s) for s in onnx_detectors.STRIDES)
  assert anchors == 126
  raw = np.zeros((1, anchors, 7), np.float32)  # x, y, log w, log h, objectness, 2 classes
  # Centre (3.5, 2.5) cells of 8 = (28, 20), 20 x 40: input (18, 0, 38, 40), score 0.9.
  raw[0, anchor(8, 3, 2)] = [0.5, 0.5, np.log(20 / 8), np.log(40 / 8), 0.9, 1.0, 0.0]
  # Centre (2.25, 1.5) cells of 16 = (36, 24), 24 x 16: input (24, 16, 48, 32), 0.8 x 0.75.
  raw[0, anchor(16, 2, 1)] = [0.25, 0.5, np.log(24 / 16), 0.0, 0.8, 0.75, 0.0]
  # The first box again, 0.8 px to the right, scored lower: NMS removes it.
  raw[0, anchor(8, 4, 2)] = [-0.4, 0.5, np.log(20 / 8), np.log(40 / 8), 0.85, 1.0, 0.0]
  # Below the threshold (0.5 x 0.5), and another class (0.9 x 0.1 for a person).
  raw[0, anchor(32, 1, 1)] = [0.5, 0.5, 0.0, 0.0, 0.5, 0.5, 0.0]
  raw[0, anchor(32, 0, 0)] = [0.5, 0.5, 0.0, 0.0, 0.9, 0.1, 1.0]
  path = write(tmp_path / 'raw.onnx', graph_bytes({'output': raw}))
  detector = onnx_detectors.OnnxDetector(path, architecture='yolox')
  assert_boxes(detector(photo_rgb()), [[180, 0, 200, 400], [240, 160, 240, 160]], [0.9, 0.6])
  # Without NMS's merge (IoU 1.0 keeps every box) the duplicate is there.
  detector = onnx_detectors.OnnxDetector(path, architecture='yolox', nms_threshold=1.0)
  assert_boxes(detector(photo_rgb()),
               [[180, 0, 200, 400], [188, 0, 200, 400], [240, 160, 240, 160]],
               [0.9, 0.85, 0.6])


# ------------------------------------------------------------------------ pre-processing

def test_letterbox_resizes_keeping_the_aspect_ratio_and_pads_with_114():
  bgr = cv2.imread(PHOTO)
  padded, ratio = onnx_detectors.letterbox(bgr, INPUT)
  assert padded.shape == (96, 64, 3) and padded.dtype == np.uint8 and ratio == RATIO
  np.testing.assert_array_equal(padded[:42], cv2.resize(bgr, (64, 42),
                                                        interpolation=cv2.INTER_LINEAR))
  assert (padded[42:] == 114).all()
  # A landscape input: padded on the right, and (rtmlib's int() of 425 * 64 / 425 =
  # 63.99999999999999) on the last row.
  padded, ratio = onnx_detectors.letterbox(bgr, (64, 128))
  assert ratio == 64 / 425
  np.testing.assert_array_equal(padded[:63, :96], cv2.resize(bgr, (96, 63),
                                                             interpolation=cv2.INTER_LINEAR))
  assert (padded[:, 96:] == 114).all() and (padded[63:] == 114).all()
  # An image of the input's size is used as is.
  padded, ratio = onnx_detectors.letterbox(bgr, (425, 640))
  assert ratio == 1.0 and np.array_equal(padded, bgr)


def test_preprocess_feeds_bgr_pixels_to_yolox_and_normalised_ones_to_rtmdet(tmp_path):
  rgb = photo_rgb()
  bgr, _ = onnx_detectors.letterbox(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), INPUT)
  x, ratio = onnx_detectors.preprocess(rgb, INPUT, 'yolox')
  assert x.shape == (1, 3, 96, 64) and x.dtype == np.float32 and ratio == RATIO
  np.testing.assert_array_equal(x[0], bgr.transpose(2, 0, 1).astype(np.float32))
  y, _ = onnx_detectors.preprocess(rgb, INPUT, 'rtmdet')
  blue = (bgr[..., 0].astype(np.float64) - 103.53) / 57.375
  red = (bgr[..., 2].astype(np.float64) - 123.675) / 58.395
  np.testing.assert_allclose(y[0, 0], blue, atol=1e-5)
  np.testing.assert_allclose(y[0, 2], red, atol=1e-5)
  # What the detector runs is that input: a graph scoring its box by the input's mean.
  path = write(tmp_path / 'mean.onnx', graph_bytes(
      {'labels': np.zeros((1, 1), np.int64)}, score_from_input=True))
  for architecture, expected in (('yolox', x), ('rtmdet', y)):
    detector = onnx_detectors.OnnxDetector(path, architecture=architecture,
                                           score_threshold=-1e9)
    _, scores = detector(rgb)
    assert scores == pytest.approx([float(np.mean(expected, dtype=np.float64))], abs=1e-3)
  assert abs(float(np.mean(x))) > 50 and abs(float(np.mean(y))) < 2


# ------------------------------------------------------------- the registry and the cache

class FileServer:
  """A real HTTP server on 127.0.0.1 serving ``folder``, counting the requests."""

  def __init__(self, folder):
    self.requests = []
    server = self

    class Handler(http.server.SimpleHTTPRequestHandler):
      def do_GET(self):  # noqa: N802 (the http.server name)
        server.requests.append(self.path.lstrip('/'))
        super().do_GET()

      def log_message(self, *args):
        del args

    self.httpd = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(Handler, directory=str(folder)))
    threading.Thread(target=self.httpd.serve_forever, kwargs={'poll_interval': 0.05},
                     daemon=True).start()

  def url(self, name):
    return f'http://127.0.0.1:{self.httpd.server_address[1]}/{name}'

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


def sha256_of(data):
  return hashlib.sha256(data).hexdigest()


def zip_of(members):
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w') as z:
    for name, data in members.items():
      z.writestr(name, data)
  return buffer.getvalue()


@pytest.fixture
def cache(tmp_path, monkeypatch):
  folder = tmp_path / 'cache'
  monkeypatch.setenv('HRNET_JAX_CACHE', str(folder))
  monkeypatch.delenv('HRNET_JAX_OFFLINE', raising=False)
  return folder


@pytest.fixture
def served(tmp_path):
  """A served onnx_sdk-like zip (a folder with end2end.onnx and the export's json files)."""
  folder = tmp_path / 'www'
  folder.mkdir()
  graph = graph_bytes({'dets': np.asarray([[[10, 5, 30, 40, 0.9]]], np.float32),
                       'labels': np.zeros((1, 1), np.int64)})
  data = zip_of({'20230928/yolox_onnx/tiny-0123abcd/end2end.onnx': graph,
                 '20230928/yolox_onnx/tiny-0123abcd/deploy.json': b'{}'})
  (folder / 'tiny-0123abcd.zip').write_bytes(data)
  server = FileServer(folder)
  server.graph, server.zip = graph, data
  yield server
  server.close()


def entry(served, **kwargs):
  fields = dict(name='tiny_test', url=served.url('tiny-0123abcd.zip'), architecture='yolox',
                input_size=INPUT)
  fields.update(kwargs)
  return onnx_detectors.DetectorModel(**fields)


def files_in(folder):
  return sorted(os.listdir(folder)) if folder.exists() else []


def test_a_name_downloads_verifies_extracts_once_then_works_offline(cache, served,
                                                                     monkeypatch):
  model = entry(served, sha256=sha256_of(served.zip), onnx_sha256=sha256_of(served.graph)[:8])
  monkeypatch.setattr(onnx_detectors, 'DETECTORS', {'tiny_test': model})
  assert onnx_detectors.is_detector_name('tiny_test')
  detector = onnx_detectors.OnnxDetector('tiny_test')
  path = str(cache / 'detectors' / 'tiny_test.onnx')
  assert detector.path == path and open(path, 'rb').read() == served.graph
  assert served.requests == ['tiny-0123abcd.zip']
  assert files_in(cache / 'downloads') == ['tiny-0123abcd.zip']  # no temporary files
  assert files_in(cache / 'detectors') == ['tiny_test.onnx']
  assert_boxes(detector(photo_rgb()), [[100, 50, 200, 350]], [0.9])
  served.close()
  monkeypatch.setenv('HRNET_JAX_OFFLINE', '1')
  assert onnx_detectors.detector_path('tiny_test') == path
  assert onnx_detectors.OnnxDetector('tiny_test').path == path
  # Offline, the zip alone is enough to extract the graph again.
  os.remove(path)
  assert onnx_detectors.detector_path(model, offline=True) == path
  assert served.requests == ['tiny-0123abcd.zip']


def test_wrong_hashes_are_refused_and_leave_nothing(cache, served):
  actual = sha256_of(served.zip)
  with pytest.raises(errors.UserError, match=f'expected 0123abcd, got {actual}'):
    onnx_detectors.detector_path(entry(served, sha256='0123abcd'))
  assert files_in(cache / 'downloads') == [] and files_in(cache / 'detectors') == []
  # No digest of the zip: its graph's is checked, and the unverified zip is not kept.
  actual = sha256_of(served.graph)
  with pytest.raises(errors.UserError, match=f'expected 89abcdef, got {actual}'):
    onnx_detectors.detector_path(entry(served, onnx_sha256='89abcdef'))
  assert files_in(cache / 'downloads') == [] and files_in(cache / 'detectors') == []
  # With the right one it is.
  path = onnx_detectors.detector_path(entry(served, onnx_sha256=actual))
  assert open(path, 'rb').read() == served.graph


def test_offline_without_the_file_names_where_to_place_it(cache, served):
  with pytest.raises(errors.MissingFileError, match='place the file from .*tiny-0123abcd.zip'):
    onnx_detectors.detector_path(entry(served, sha256=sha256_of(served.zip)), offline=True)
  with pytest.raises(errors.MissingFileError, match='place the file from .*tiny-0123abcd.zip'):
    onnx_detectors.detector_path(entry(served), offline=True)
  assert served.requests == []
  # A detector with no published digest at all is not downloaded: it would go unverified.
  with pytest.raises(errors.MissingFileError, match='no published sha256.*place it at'):
    onnx_detectors.detector_path(entry(served))
  assert served.requests == [] and files_in(cache / 'downloads') == []


def test_a_zip_without_the_graph(cache, tmp_path, served):
  data = zip_of({'a/model.onnx': served.graph})
  (tmp_path / 'www' / 'other.zip').write_bytes(data)
  with pytest.raises(errors.UserError, match='expected one end2end.onnx in the zip.*a/model.onnx'):
    onnx_detectors.detector_path(entry(served, url=served.url('other.zip'),
                                       sha256=sha256_of(data)))


def test_the_registry():
  assert {'yolox_tiny_humanart', 'yolox_m_humanart', 'yolox_x_humanart',
          'rtmdet_nano_person'} <= set(onnx_detectors.DETECTORS)
  for model in onnx_detectors.DETECTORS.values():
    assert model.url.startswith('https://download.openmmlab.com/mmpose/v1/projects/')
    assert model.file_name.endswith('.zip') and model.architecture in ('yolox', 'rtmdet')
    # The 8 hex digits in the name are the checkpoint's sha256 prefix, not the zip's.
    prefix = model.file_name.rsplit('-', 1)[1][:8]
    for digest in (model.sha256, model.onnx_sha256):
      assert digest is None or (len(digest) == 64 and not digest.startswith(prefix))
  assert onnx_detectors.DETECTORS['yolox_tiny_humanart'].input_size == (416, 416)
  assert onnx_detectors.DETECTORS['yolox_x_humanart'].input_size == (640, 640)
  assert onnx_detectors.DETECTORS['rtmdet_nano_person'].architecture == 'rtmdet'
  table = onnx_detectors.markdown_table()
  assert table.count('\n') == len(onnx_detectors.DETECTORS) + 1 and '`yolox_m_humanart`' in table
  with open(os.path.join(REPO, 'docs', 'predict.md')) as f:
    assert f'<!-- detector-table -->\n{table}\n' in f.read(), 'docs/predict.md: regenerate it'


# ------------------------------------------------------------------------------ errors

def test_clear_errors(tmp_path, monkeypatch):
  with pytest.raises(errors.MissingFileError, match='missing.onnx does not exist'):
    onnx_detectors.OnnxDetector(str(tmp_path / 'missing.onnx'))
  with pytest.raises(errors.MissingFileError, match='did you mean yolox_m_humanart'):
    onnx_detectors.OnnxDetector('yolox_m_humanrt')
  bad = write(tmp_path / 'yolox_bad.onnx', b'not an onnx model')
  with pytest.raises(errors.UserError, match='yolox_bad.onnx is not a valid ONNX model'):
    onnx_detectors.OnnxDetector(bad)
  graph = write(tmp_path / 'tiny.onnx', graph_bytes({'dets': np.zeros((1, 0, 5), np.float32)}))
  with pytest.raises(errors.UserError, match="architecture 'ssd': expected one of yolox, rtmdet"):
    onnx_detectors.OnnxDetector(graph, architecture='ssd')
  with pytest.raises(errors.UserError, match='tiny.onnx: cannot tell its architecture.*pass '
                     'architecture='):
    onnx_detectors.OnnxDetector(graph)
  with pytest.raises(errors.UserError, match=r'takes 96x64 images .*not input_size \(64, 64\)'):
    onnx_detectors.OnnxDetector(graph, architecture='yolox', input_size=(64, 64))
  detector = onnx_detectors.OnnxDetector(graph, architecture='rtmdet')
  with pytest.raises(errors.UserError, match=r'shape \(425, 640\): expected an \(height, width, '
                     r'3\) RGB image'):
    detector(photo_rgb()[..., 0])
  raw = write(tmp_path / 'raw_rtmdet.onnx', graph_bytes({'output': np.zeros((1, 126, 6),
                                                                            np.float32)}))
  with pytest.raises(errors.UserError, match='an rtmdet graph without NMS .* is not supported'):
    onnx_detectors.OnnxDetector(raw)(photo_rgb())
  wrong = write(tmp_path / 'wrong_yolox.onnx', graph_bytes({'output': np.zeros((1, 100, 6),
                                                                              np.float32)}))
  with pytest.raises(errors.UserError, match=r'shape \(100, 6\): expected \(126, 5 \+ classes\)'):
    onnx_detectors.OnnxDetector(wrong)(photo_rgb())
  monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # not installed
  with pytest.raises(errors.UserError, match='pip install onnxruntime'):
    onnx_detectors.OnnxDetector(graph, architecture='yolox')


def test_the_module_needs_neither_onnxruntime_nor_the_zoo_to_import():
  code = ('import sys; from hrnet_jax import onnx_detectors; '
          'assert "onnxruntime" not in sys.modules and "hrnet_jax.zoo" not in sys.modules')
  subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True)
