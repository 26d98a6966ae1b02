"""The model zoo: download over a real HTTP server on 127.0.0.1, hash check, atomic cache,
conversion once, offline use, and every entry's architecture."""

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from conftest import FIXTURES, OFFICIAL, REPO, small_config
from hrnet_jax import checkpoints, config_lib, errors, train_lib, weights, zoo
from test_weights import assert_heatmaps_match

MMPOSE = os.path.join(FIXTURES, 'mmpose')
# The official small fixture model in each mmpose key layout
# (tests/reference/make_mmpose_fixture.py).
LAYOUT_FILES = {'mmpose0': 'small_hrnet_mmpose0.pth', 'mmpose1': 'small_hrnet_mmpose1.pth'}


def sha256_of(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


class FileServer:
  """A real HTTP server on 127.0.0.1 that serves files from memory and counts the requests.

  A name in ``drop`` is served with its full Content-Length but only half the bytes, then the
  connection is closed (a download interrupted half-way).
  """

  def __init__(self, files: dict[str, bytes]):
    self.files, self.requests, self.drop = dict(files), [], set()
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):  # noqa: N802 (the http.server name)
        name = self.path.lstrip('/')
        server.requests.append(name)
        if name not in server.files:
          self.send_error(404)
          return
        data = server.files[name]
        self.send_response(200)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if name in server.drop:
          self.wfile.write(data[:len(data) // 2])
          self.wfile.flush()
          self.connection.shutdown(socket.SHUT_RDWR)
          self.close_connection = True
        else:
          self.wfile.write(data)

      def log_message(self, *args):
        del args

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
    self.thread.start()

  def url(self, name: str) -> str:
    return f'http://127.0.0.1:{self.httpd.server_address[1]}/{name}'

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


def small_recipe():
  """configs/small_hrnet.py: the coco_w32 recipe with the small fixture architecture."""
  config = config_lib.topdown_config(width=32, image_size=(96, 128), sigma=2, batch_size=32,
                                     test_batch_size=32)
  config.model = small_config()
  return config


def layout_bytes(layout: str) -> bytes:
  with open(os.path.join(MMPOSE, LAYOUT_FILES[layout]), 'rb') as f:
    return f.read()


@pytest.fixture
def cache(tmp_path, monkeypatch):
  """An empty zoo cache folder of this test, downloads on."""
  folder = tmp_path / 'cache'
  monkeypatch.setenv('HRNET_JAX_CACHE', str(folder))
  monkeypatch.delenv(zoo.OFFLINE_ENV, raising=False)
  return folder


@pytest.fixture
def server():
  data = {name: layout_bytes(layout) for layout, name in LAYOUT_FILES.items()}
  s = FileServer({f'{os.path.splitext(name)[0]}-{sha256_of(b)[:8]}.pth': b
                  for name, b in data.items()})
  yield s
  s.close()


def served_name(server, layout):
  stem = os.path.splitext(LAYOUT_FILES[layout])[0]
  return next(n for n in server.files if n.startswith(stem + '-'))


@pytest.fixture
def register(monkeypatch):
  """Registers test zoo models for one test only."""
  monkeypatch.setattr(zoo, 'MODELS', dict(zoo.MODELS))

  def add(**kwargs):
    fields = dict(kind='topdown', recipe='configs/small_hrnet.py', build=small_recipe,
                  layout='mmpose0')
    fields.update(kwargs)
    return zoo.register(zoo.ZooModel(**fields))
  return add


def downloads(cache):
  folder = cache / zoo.DOWNLOADS_DIR
  return sorted(os.listdir(folder)) if folder.exists() else []


def official_io():
  return np.load(os.path.join(OFFICIAL, 'small_hrnet_io.npz'))


@pytest.mark.parametrize('layout', sorted(LAYOUT_FILES))
def test_zoo_name_downloads_verifies_converts_once_then_works_offline(
    cache, server, register, layout):
  name = served_name(server, layout)
  model = register(name='small_test', file_name=name, url=server.url(name),
                   sha256=zoo.hash_from_url(name), layout=layout)
  config = model.config()
  variables = zoo.load_variables('small_test', config.model)
  assert_heatmaps_match(config.model, variables, official_io())
  assert server.requests == [name]
  assert downloads(cache) == [name]  # no temporary file left beside it
  converted = cache / zoo.MODELS_DIR / 'small_test'
  assert (converted / checkpoints.METADATA_FILE).exists()
  # Later calls read the converted folder: no request, and no network needed at all.
  server.close()
  again = zoo.load_variables('small_test', config.model, offline=True)
  assert server.requests == [name]
  for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(again)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert zoo.weights_path('small_test') == str(converted)


def test_wrong_hash_is_refused_and_leaves_nothing(cache, server, register):
  name = served_name(server, 'mmpose0')
  register(name='small_test', file_name=name, url=server.url(name), sha256='0123abcd')
  actual = sha256_of(server.files[name])
  with pytest.raises(errors.UserError, match=f'expected 0123abcd, got {actual}'):
    zoo.weights_path('small_test')
  assert downloads(cache) == []
  assert not (cache / zoo.MODELS_DIR).exists() or not os.listdir(cache / zoo.MODELS_DIR)


def test_interrupted_download_leaves_no_file_a_retry_would_trust(cache, server, register):
  name = served_name(server, 'mmpose1')
  register(name='small_test', file_name=name, url=server.url(name),
           sha256=zoo.hash_from_url(name), layout='mmpose1')
  server.drop.add(name)
  with pytest.raises(errors.UserError, match='could not download'):
    zoo.weights_path('small_test')
  assert downloads(cache) == []
  server.drop.clear()
  path = zoo.fetch('small_test')
  assert zoo.file_sha256(path) == sha256_of(server.files[name])
  assert server.requests == [name, name]


def test_url_with_hash_in_its_name_downloads_once(cache, server, small_model_config):
  name = served_name(server, 'mmpose0')
  url = server.url(name)
  variables = zoo.load_variables(url, small_model_config)
  assert_heatmaps_match(small_model_config, variables, official_io())
  assert zoo.fetch(url) == str(cache / zoo.DOWNLOADS_DIR / name)
  assert server.requests == [name]
  # A URL whose file name has no hash needs one: '#sha256=HEX'.
  server.files['plain.pth'] = server.files[name]
  with pytest.raises(errors.UserError, match='no sha256'):
    zoo.fetch(server.url('plain.pth'))
  digest = sha256_of(server.files[name])
  assert os.path.exists(zoo.fetch(server.url('plain.pth') + f'#sha256={digest}'))


def test_offline_and_hand_placed_files(cache, server, register, monkeypatch):
  name = served_name(server, 'mmpose0')
  register(name='small_test', file_name=name, url=server.url(name),
           sha256=zoo.hash_from_url(name))
  monkeypatch.setenv(zoo.OFFLINE_ENV, '1')
  where = cache / zoo.DOWNLOADS_DIR / name
  with pytest.raises(errors.MissingFileError, match=f'place the file .* at {where}'):
    zoo.weights_path('small_test')
  assert server.requests == []
  # A file only published on a page (Google Drive, OneDrive) is placed by hand.
  # A file only published on a page (Google Drive, OneDrive) is placed by hand: here the
  # official small model, in the official key layout.
  register(name='small_manual', file_name='small_hrnet.pth', page='https://example.org/drive',
           page_path='pose_coco/small_hrnet.pth', sha256=None, layout='official')
  manual = cache / zoo.DOWNLOADS_DIR / 'small_hrnet.pth'
  with pytest.raises(errors.MissingFileError,
                     match=f'pose_coco/small_hrnet.pth by hand from https://example.org/drive '
                           f'and place it at {manual}'):
    zoo.weights_path('small_manual')
  os.makedirs(manual.parent, exist_ok=True)
  with open(os.path.join(OFFICIAL, 'small_hrnet.pth'), 'rb') as f:
    manual.write_bytes(f.read())
  config = zoo.get('small_manual').config()
  assert_heatmaps_match(config.model, zoo.load_variables('small_manual', config.model),
                        official_io())
  # Training starts from a zoo name too (config.init_from).
  loaded = train_lib.initial_variables(config_lib.override(config, {'init_from': 'small_manual'}),
                                       None)
  assert_heatmaps_match(config.model, loaded, official_io())
  assert server.requests == []


def test_unknown_name_suggests_close_ones():
  with pytest.raises(errors.UserError, match='did you mean hrnet_w32_coco_256x192'):
    zoo.weights_path('hrnet_w32_coco_256x19')


def test_every_zoo_model_builds_the_publishers_architecture():
  counts = {}
  for model in zoo.MODELS.values():
    config = model.config()
    assert model.recipe and os.path.exists(os.path.join(REPO, model.recipe)), model.name
    if model.kind == 'backbone':
      continue
    key = config.model.to_json()
    if key not in counts:
      shapes = weights.variable_shapes(config.model)
      counts[key] = sum(int(np.prod(x.shape))
                        for x in jax.tree_util.tree_leaves(shapes['params']))
    assert counts[key] == model.num_params, (model.name, counts[key], model.num_params)


def test_recipe_builders_equal_the_recipe_files():
  for recipe, build in zoo._RECIPES.items():
    assert build().to_dict() == config_lib.load_recipe(os.path.join(REPO, recipe)).to_dict()


# A launch/ script run with one more zoo model registered: the small fixture model served by
# the test's HTTP server (a user's launch/ command sees the zoo the same way).
WRAPPER = '''
import runpy, sys
from hrnet_jax import config_lib, models, zoo

def build():
  config = config_lib.topdown_config(width=32, image_size=(96, 128), sigma=2, batch_size=8,
                                     test_batch_size=8)
  config.model = models.pose_hrnet_config(8, 1, (1, 1, 1), 17, 1)
  return config

zoo.register(zoo.ZooModel(name=sys.argv[1], kind='topdown', recipe='configs/small_hrnet.py',
                          build=build, layout=sys.argv[2], url=sys.argv[3],
                          file_name=sys.argv[3].rsplit('/', 1)[1],
                          sha256=zoo.hash_from_url(sys.argv[3])))
sys.argv = sys.argv[4:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


def run_with_zoo_model(tmp_path, server, layout, script, *args, offline=False):
  wrapper = tmp_path / 'with_zoo_model.py'
  wrapper.write_text(WRAPPER)
  name = served_name(server, layout)
  env = dict(os.environ, JAX_PLATFORMS='cpu', HRNET_JAX_CACHE=str(tmp_path / 'cache'))
  if offline:
    env[zoo.OFFLINE_ENV] = '1'
  result = subprocess.run(
      [sys.executable, str(wrapper), f'small_{layout}', layout, server.url(name),
       os.path.join(REPO, 'launch', script), *args],
      capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result.stdout + result.stderr


def test_demo_takes_a_zoo_name_and_then_needs_no_network(tmp_path, server):
  """launch/demo.py --model=NAME downloads, verifies, converts and runs with the model's recipe
  (no --config); a second run, offline and with the server gone, draws the same people."""
  photo = os.path.join(FIXTURES, 'real_data', 'coco', '000000196141.jpg')
  first = run_with_zoo_model(tmp_path, server, 'mmpose0', 'demo.py', '--model=small_mmpose0',
                             f'--input={photo}', f'--output={tmp_path / "out.jpg"}')
  assert 'Downloading' in first and (tmp_path / 'out.jpg').exists()
  assert len(server.requests) == 1
  server.close()
  second = run_with_zoo_model(tmp_path, server, 'mmpose0', 'demo.py', '--model=small_mmpose0',
                              f'--input={photo}', f'--output={tmp_path / "again.jpg"}',
                              offline=True)
  assert 'Downloading' not in second and (tmp_path / 'again.jpg').exists()
  assert len(server.requests) == 1
  with open(tmp_path / 'out.jpg.json') as f, open(tmp_path / 'again.jpg.json') as g:
    assert f.read() == g.read()


def test_eval_takes_a_zoo_name_with_its_recipe(tmp_path, server):
  coco_sample = os.path.join(FIXTURES, 'real_data', 'coco')
  out = run_with_zoo_model(
      tmp_path, server, 'mmpose1', 'eval.py', '--init_from=small_mmpose1',
      f'--workdir={tmp_path / "eval"}', f'--config.dataset.root={coco_sample}',
      '--config.dataset.annotations=test_coco.json',
      '--config.test.bbox_file=test_coco_det_AP_H_56.json')
  assert 'Evaluating small_mmpose1' in out and 'Average Precision' in out
  assert os.path.exists(tmp_path / 'eval' / 'eval' / 'val2017_metrics.json')


def test_backbone_name_initialises_training_from_an_imagenet_file(cache, register, tmp_path):
  """The ImageNet files mmpose hosts keep the official backbone keys beside a classification
  head named head.* (and fc.*): training's init_from takes the backbone, the pose head stays."""
  from conftest import random_variables
  from hrnet_jax import torch_pickle
  state = dict(weights.read_state_dict(os.path.join(OFFICIAL, 'small_hrnet.pth')))
  del state['final_layer.weight'], state['final_layer.bias']
  rng = np.random.default_rng(0)
  state['head.0.0.0.conv1.weight'] = rng.normal(size=(4, 8, 1, 1)).astype(np.float32)
  state['fc.weight'] = rng.normal(size=(10, 4)).astype(np.float32)
  path = tmp_path / 'imagenet.pth'
  torch_pickle.save_state_dict(state, path)
  data = path.read_bytes()
  s = FileServer({f'small_imagenet-{sha256_of(data)[:10]}.pth': data})
  try:
    name = next(iter(s.files))
    register(name='small_imagenet', kind='backbone', file_name=name, url=s.url(name),
             sha256=zoo.hash_from_url(name), layout='imagenet')
    config = config_lib.override(small_recipe(), {'init_from': 'small_imagenet'})
    base = random_variables(config.model)
    loaded = train_lib.initial_variables(config, base)
  finally:
    s.close()
  assert weights.detect_layout(state) == 'imagenet'
  np.testing.assert_array_equal(loaded['params']['final_layer']['kernel'],
                                base['params']['final_layer']['kernel'])
  np.testing.assert_array_equal(np.asarray(loaded['params']['conv1']['kernel']),
                                state['conv1.weight'].transpose(2, 3, 1, 0))
  assert s.requests == [name]


@pytest.mark.parametrize('page, marker, table', [
    ('README.md', '<!-- zoo-summary -->', zoo.markdown_summary),
    ('docs/models.md', '<!-- zoo-table -->', zoo.markdown_table)])
def test_the_docs_list_the_zoo_as_it_is(page, marker, table):
  with open(os.path.join(REPO, page)) as f:
    assert f'{marker}\n{table()}\n' in f.read(), f'{page}: regenerate its zoo table'
