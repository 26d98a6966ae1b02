"""mmpose top-down checkpoints: strict loading by key layout, and their ``meta`` read as data.

The fixtures (tests/fixtures/mmpose/, made by tests/reference/make_mmpose_fixture.py with the
real torch.save) are the official small fixture model in mmpose 0.x and 1.x key layouts.
"""

import os
import pickle
import zipfile

import jax
import numpy as np
import pytest

from conftest import FIXTURES, OFFICIAL, small_config
from hrnet_jax import models, torch_pickle, weights

MMPOSE = os.path.join(FIXTURES, 'mmpose')
FILES = {'mmpose0': os.path.join(MMPOSE, 'small_hrnet_mmpose0.pth'),
         'mmpose1': os.path.join(MMPOSE, 'small_hrnet_mmpose1.pth')}
HEAD = {'mmpose0': 'keypoint_head', 'mmpose1': 'head'}
# As tests/test_weights.py: max |ours - official| <= 1e-4 x max |official heatmap|.
RTOL_OF_MAX = 1e-4
COCO_SIGMAS = np.float32([.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062,
                          .107, .107, .087, .087, .089, .089])


@pytest.fixture(scope='module')
def official():
  config = small_config()
  variables = weights.load_torch_checkpoint(os.path.join(OFFICIAL, 'small_hrnet.pth'), config)
  return config, variables, jax.jit(models.PoseHRNet(config).apply)


@pytest.mark.parametrize('layout', sorted(FILES))
def test_mmpose_checkpoints_load_strictly_and_reproduce_official_heatmaps(layout, official):
  config, expected, apply = official
  variables = weights.load_torch_checkpoint(FILES[layout], config)
  assert weights.load_torch_checkpoint(FILES[layout], config, layout=layout).keys() == \
      variables.keys()
  # The same tensors as the official file: every one found its home.
  flat = dict(jax.tree_util.tree_leaves_with_path(variables))
  assert len(flat) == len(jax.tree_util.tree_leaves(expected))
  for path, value in jax.tree_util.tree_leaves_with_path(expected):
    np.testing.assert_array_equal(flat[path], value)
  io = np.load(os.path.join(OFFICIAL, 'small_hrnet_io.npz'))
  out = np.asarray(apply(variables, io['input_nchw'].transpose(0, 2, 3, 1)))
  heatmaps = io['heatmaps_nchw'].transpose(0, 2, 3, 1)
  assert out.shape == heatmaps.shape
  assert np.abs(out - heatmaps).max() / np.abs(heatmaps).max() <= RTOL_OF_MAX


def test_layout_detection_and_renaming():
  state = weights.read_state_dict(FILES['mmpose1'])
  assert state.layout == 'mmpose1'
  assert state.renamed['final_layer.weight'] == 'head.final_layer.weight'
  assert state.renamed['stage4.0.fuse_layers.0.3.1.running_var'] == \
      'backbone.stage4.0.fuse_layers.0.3.1.running_var'
  # mmpose itself drops the data preprocessor's buffers on load: set aside, not lost.
  np.testing.assert_allclose(state.dropped['data_preprocessor.mean'].ravel(),
                             [123.675, 116.28, 103.53], rtol=1e-6)
  assert state.dropped['data_preprocessor.std'].shape == (3, 1, 1)
  assert weights.read_state_dict(FILES['mmpose0']).layout == 'mmpose0'
  assert weights.read_state_dict(os.path.join(OFFICIAL, 'small_hrnet.pth')).layout == 'official'
  for keys, layout in [(['conv1.weight', 'final_layer.bias'], 'official'),
                       (['conv1.weight', 'classifier.weight'], 'imagenet'),
                       (['backbone.conv1.weight', 'keypoint_head.final_layer.bias'], 'mmpose0'),
                       (['backbone.conv1.weight', 'head.final_layer.bias'], 'mmpose1'),
                       (['data_preprocessor.mean', 'backbone.conv1.weight'], 'mmpose1')]:
    assert weights.detect_layout(dict.fromkeys(keys)) == layout, keys
  # A backbone-only mmpose file fits either mmpose layout.
  assert weights.to_official_keys({'backbone.conv1.weight': np.zeros(1)}, 'mmpose0').layout == \
      'mmpose0'
  with pytest.raises(weights.LayoutError, match='mix mmpose 0.x'):
    weights.to_official_keys({'keypoint_head.final_layer.weight': 0, 'head.final_layer.bias': 0})
  with pytest.raises(ValueError, match='unknown key layout'):
    weights.to_official_keys({'conv1.weight': 0}, 'mmpose2')


def test_layout_mismatch_is_a_clear_error(official):
  config = official[0]
  with pytest.raises(weights.LayoutError) as info:
    weights.load_torch_checkpoint(os.path.join(OFFICIAL, 'small_hrnet.pth'), config,
                                  layout='mmpose1')
  text = str(info.value)
  assert 'small_hrnet.pth' in text
  assert 'expected a checkpoint in the mmpose1 (' in text and 'found the official layout' in text
  with pytest.raises(weights.LayoutError, match='expected .*mmpose1.* found the mmpose0'):
    weights.read_state_dict(FILES['mmpose0'], layout='mmpose1')
  assert weights.read_state_dict(FILES['mmpose0'], layout=('mmpose0', 'mmpose1')).layout == \
      'mmpose0'


def test_meta_is_read_as_data(tmp_path):
  one = weights.read_checkpoint(FILES['mmpose1'])
  meta = one.meta
  assert meta['mmpose_version'] == '1.3.1' and meta['mmengine_version'] == '0.10.3'
  assert "type='HRNet'" in meta['cfg'] and meta['epoch'] == 210
  data = meta['dataset_meta']
  assert data['sigmas'].dtype == np.float32
  np.testing.assert_array_equal(data['sigmas'], COCO_SIGMAS)
  assert data['keypoint_colors'].dtype == np.uint8 and data['keypoint_colors'].shape == (17, 3)
  assert data['flip_indices'] == [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
  assert data['upper_body_ids'] == list(range(11))
  assert data['keypoint_id2name'][0] == 'nose'
  # mmengine objects are inert records of what the file asked for.
  history = meta['loss_history']
  assert isinstance(history, torch_pickle.Inert)
  assert type(history).global_name() == 'mmengine.logging.history_buffer.HistoryBuffer'
  np.testing.assert_array_equal(history.state['_log_history'], [0.0012, 0.0011, 0.0010])
  np.testing.assert_array_equal(history.state['_count_history'], [64, 64, 64])
  config = meta['test_cfg']
  assert type(config).global_name() == 'mmengine.config.config.ConfigDict'
  assert config.args == ({'flip_test': True, 'flip_mode': 'heatmap', 'shift_heatmap': True},)
  # Other top-level entries come along, read the same way.
  scalars = one.extra['message_hub']['log_scalars']
  assert type(scalars['coco/AP']).inert_name == 'HistoryBuffer'
  np.testing.assert_array_equal(scalars['coco/AP'].state['_log_history'], [0.7468])

  zero = weights.read_checkpoint(FILES['mmpose0'])
  assert zero.meta['mmpose_version'] == '0.29.0' and zero.meta['mmcv_version'] == '1.7.0'
  np.testing.assert_array_equal(zero.meta['dataset_meta']['sigmas'], COCO_SIGMAS)
  best = zero.meta['hook_msgs']['best_score']
  assert isinstance(best, np.float64) and best == 0.7468
  config = zero.meta['test_cfg']  # an addict-style dict subclass: items set, not called
  assert type(config).global_name() == 'mmcv.utils.config.ConfigDict'
  assert config.dict_items == {'flip_test': True, 'post_process': 'default',
                               'shift_heatmap': True}
  assert config.state is config  # addict's __getstate__ is the object itself: a cycle
  log = zero.meta['log_history']
  assert type(log).global_name() == 'collections.defaultdict'
  assert log.args[0].global_name() == '__builtin__.list'
  assert log.dict_items == {'coco/AP': [0.31, 0.35]}
  # The default reader stays strict: the same file is refused, naming the first global.
  with pytest.raises(torch_pickle.UnsafeCheckpointError,
                     match='mmengine.logging.history_buffer.HistoryBuffer'):
    torch_pickle.load(FILES['mmpose1'])


# ----------------------------------------------------------------- hand-made pickles

def _text(value: str) -> bytes:
  data = value.encode()
  return b'X' + len(data).to_bytes(4, 'little') + data


def _call(module: str, name: str, *texts: str) -> bytes:
  """Pickle ops that call ``module.name(*texts)``."""
  return (b'c' + f'{module}\n{name}\n'.encode() + b'(' + b''.join(_text(t) for t in texts) +
          b'tR')


def _write_checkpoint(path, state, meta_ops: bytes = b'', state_ops: bytes = b'',
                      top_ops: bytes = b''):
  """A zip .pth of ``{'meta': {...meta_ops}, 'state_dict': OrderedDict(state + state_ops)}``:
  tensors as torch_pickle.save_state_dict writes them (no memo), other entries as given;
  ``top_ops`` run with the state_dict on top of the stack."""
  torch_pickle.save_state_dict(state, path)
  with zipfile.ZipFile(path) as archive:
    entries = {n: archive.read(n) for n in archive.namelist()}
  name = next(n for n in entries if n.endswith('/data.pkl'))
  state_pickle = entries[name]
  assert state_pickle.startswith(b'\x80\x02') and state_pickle.endswith(b'u.')
  entries[name] = (b'\x80\x02}(' + _text('meta') + b'}(' + meta_ops + b'u' +
                   _text('state_dict') + state_pickle[2:-2] + state_ops + b'u' + top_ops +
                   b'u.')
  with zipfile.ZipFile(path, 'w') as archive:
    for entry, data in entries.items():
      archive.writestr(entry, data)


def _mmpose_state(layout):
  return torch_pickle.load(FILES[layout], placeholders=True)['state_dict']


def test_globals_in_meta_are_placeholders_that_never_run(tmp_path, official):
  marker = tmp_path / 'pwned'
  path = tmp_path / 'meta_with_code.pth'
  meta = (_text('evil') + _call('os', 'system', f'touch {marker}') +
          _text('eval') + _call('builtins', 'eval', f'open({str(marker)!r}, "w")') +
          _text('mmpose_version') + _text('1.3.1'))
  _write_checkpoint(path, _mmpose_state('mmpose1'), meta)
  checkpoint = weights.read_checkpoint(path)
  assert not marker.exists()
  evil = checkpoint.meta['evil']
  assert type(evil).global_name() == 'os.system' and evil.args == (f'touch {marker}',)
  assert type(checkpoint.meta['eval']).global_name() == 'builtins.eval'
  assert checkpoint.meta['mmpose_version'] == '1.3.1'
  variables = weights.load_torch_checkpoint(path, official[0], layout='mmpose1')
  assert not marker.exists()
  np.testing.assert_array_equal(variables['params']['final_layer']['kernel'],
                                official[1]['params']['final_layer']['kernel'])


@pytest.mark.parametrize('where', ['value', 'key', 'attribute', 'state_dict', 'top'])
def test_unknown_global_in_the_state_dict_is_refused_by_name(tmp_path, where):
  marker = tmp_path / 'pwned'
  path = tmp_path / 'evil.pth'
  code = _call('posix', 'system', f'touch {marker}')
  state = {'backbone.conv1.weight': np.zeros((2, 3, 3, 3), np.float32)}
  if where == 'value':
    _write_checkpoint(path, state, state_ops=_text('backbone.evil') + code)
  elif where == 'key':
    _write_checkpoint(path, state, state_ops=code + _text('x'))
  elif where == 'attribute':  # BUILD on the OrderedDict: an attribute hiding its items()
    _write_checkpoint(path, state, top_ops=b'}(' + _text('items') + code + b'ub')
  elif where == 'state_dict':  # the state_dict entry itself is made by the global
    torch_pickle.save_state_dict(state, path)
    with zipfile.ZipFile(path) as archive:
      entries = {n: archive.read(n) for n in archive.namelist()}
    name = next(n for n in entries if n.endswith('/data.pkl'))
    entries[name] = b'\x80\x02}(' + _text('meta') + b'}' + _text('state_dict') + code + b'u.'
    with zipfile.ZipFile(path, 'w') as archive:
      for entry, data in entries.items():
        archive.writestr(entry, data)
  else:  # the whole file is the call
    with zipfile.ZipFile(path, 'w') as archive:
      archive.writestr('archive/data.pkl', b'\x80\x02' + code + b'.')
  with pytest.raises(torch_pickle.UnsafeCheckpointError, match='posix.system'):
    weights.read_state_dict(path)
  with pytest.raises(torch_pickle.UnsafeCheckpointError, match='posix.system'):
    weights.read_checkpoint(path)
  assert not marker.exists()


@pytest.mark.parametrize('layout', sorted(FILES))
def test_mismatched_mmpose_checkpoint_names_keys_as_the_file_does(tmp_path, layout, official):
  config = official[0]
  state = _mmpose_state(layout)
  head = HEAD[layout]
  state.pop('backbone.stage3.0.branches.2.0.conv1.weight')
  state[f'{head}.some_extra.weight'] = np.zeros((3,), np.float32)
  state[f'{head}.final_layer.weight'] = np.zeros((5, 8, 1, 1), np.float32)
  state['backbone.stage4.0.fuse_layers.1.0.0.weight'] = np.zeros((16, 64, 1, 1), np.float32)
  path = tmp_path / f'edited_{layout}.pth'
  torch_pickle.save_state_dict(state, path)
  with pytest.raises(weights.CheckpointMismatchError) as info:
    weights.load_torch_checkpoint(path, config)
  err = info.value
  assert err.missing == ['backbone.stage3.0.branches.2.0.conv1.weight']
  assert sorted(err.unexpected) == sorted([f'{head}.some_extra.weight',
                                           'backbone.stage4.0.fuse_layers.1.0.0.weight'])
  assert err.misshaped == [(f'{head}.final_layer.weight', (5, 8, 1, 1), (17, 8, 1, 1))]
  text = str(err)
  for name in (f'{head}.some_extra.weight', 'backbone.stage3.0.branches.2.0.conv1.weight',
               f'{head}.final_layer.weight: (5, 8, 1, 1) vs (17, 8, 1, 1)', layout):
    assert name in text


def test_missing_head_and_colliding_keys_are_named(tmp_path, official):
  config = official[0]
  state = _mmpose_state('mmpose0')
  state.pop('keypoint_head.final_layer.bias')
  state['conv1.weight'] = state['backbone.conv1.weight']  # a second tensor for one home
  path = tmp_path / 'edited.pth'
  torch_pickle.save_state_dict(state, path)
  with pytest.raises(weights.CheckpointMismatchError) as info:
    weights.load_torch_checkpoint(path, config)
  assert info.value.missing == ['keypoint_head.final_layer.bias']
  assert info.value.unexpected == ['conv1.weight']
  # Taking only the backbone reports the head and the stray key as unused, by file names.
  init = jax.tree_util.tree_map(np.zeros_like, official[1])
  loaded, report = weights.load_pretrained_backbone(path, config, init)
  assert set(report['unused']) == {'keypoint_head.final_layer.weight', 'conv1.weight'}
  np.testing.assert_array_equal(loaded['params']['conv1']['kernel'],
                                official[1]['params']['conv1']['kernel'])


# ----------------------------------------------------------------- numpy arrays as data

@pytest.mark.parametrize('core', ['numpy.core', 'numpy._core'])
def test_numpy_arrays_are_read_as_data_under_both_module_names(tmp_path, core):
  values = {
      'f32': np.arange(6, dtype=np.float32).reshape(2, 3),
      'fortran': np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
      'big_endian': np.arange(4, dtype='>f8'),
      'scalar_array': np.array(3.5),
      'empty': np.zeros((0, 2), np.uint8),
      'text': np.array(['a', 'bc']),
      'bytes': np.array([b'x', b'yz']),
      'flags': np.array([True, False]),
      'best': np.float64(0.75),
  }
  payload = pickle.dumps(values, protocol=2)
  for module in (b'numpy.core.multiarray', b'numpy._core.multiarray'):
    payload = payload.replace(module, core.encode() + b'.multiarray')
  assert core.encode() + b'.multiarray\n_reconstruct' in payload
  path = tmp_path / 'arrays.pth'
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('archive/data.pkl', payload)
  before = np.dtype('f8').byteorder
  loaded = torch_pickle.load(path)
  for key, value in values.items():
    assert loaded[key].dtype == value.dtype, key
    np.testing.assert_array_equal(loaded[key], value)
  assert loaded['fortran'].flags.f_contiguous
  assert np.dtype('f8').byteorder == before  # numpy's shared dtypes are not touched


def test_numpy_arrays_of_objects_are_never_decoded(tmp_path):
  path = tmp_path / 'objects.pth'
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('archive/data.pkl',
                     pickle.dumps({'objects': np.array([1, 'a'], dtype=object)}, protocol=2))
  with pytest.raises(torch_pickle.UnsafeCheckpointError, match='not a plain numeric'):
    torch_pickle.load(path)
  placeholder = torch_pickle.load(path, placeholders=True)['objects']
  assert type(placeholder).global_name() == 'numpy.ndarray'
  assert placeholder.state[-1] == [1, 'a']  # the pickled items, left as they were
