"""Official checkpoint import: parity with the official heatmaps, safety, strictness, export."""

import glob
import os
import pickle
import zipfile

import jax
import numpy as np
import pytest

from conftest import OFFICIAL, REFERENCE, random_variables
from hrnet_jax import models, torch_pickle, weights

# float32 parity: max |ours - official| <= 1e-4 x max |official heatmap|.
RTOL_OF_MAX = 1e-4


def assert_heatmaps_match(config, variables, io_npz):
  images = io_npz['input_nchw'].transpose(0, 2, 3, 1)
  expected = io_npz['heatmaps_nchw'].transpose(0, 2, 3, 1)
  out = np.asarray(jax.jit(models.PoseHRNet(config).apply)(variables, images))
  assert out.shape == expected.shape
  err = np.abs(out - expected).max() / np.abs(expected).max()
  assert err <= RTOL_OF_MAX, err


@pytest.mark.parametrize('name', ['small_hrnet.pth', 'small_hrnet_checkpoint.pth'])
def test_official_small_model_reproduces_official_heatmaps(name, small_model_config):
  variables = weights.load_torch_checkpoint(os.path.join(OFFICIAL, name), small_model_config)
  assert_heatmaps_match(small_model_config, variables,
                        np.load(os.path.join(OFFICIAL, 'small_hrnet_io.npz')))


def test_training_checkpoint_is_the_same_model(small_model_config):
  plain = weights.load_torch_checkpoint(os.path.join(OFFICIAL, 'small_hrnet.pth'),
                                        small_model_config)
  ckpt = weights.load_torch_checkpoint(os.path.join(OFFICIAL, 'small_hrnet_checkpoint.pth'),
                                       small_model_config)
  for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(ckpt)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('case', sorted(glob.glob(os.path.join(REFERENCE, 'w*.npz'))),
                         ids=os.path.basename)
def test_other_architectures_and_sizes_match_torch_reference(case):
  """Made by tests/reference/make_reference_cases.py (zip and legacy torch.save formats)."""
  data = np.load(case)
  config = models.pose_hrnet_config(int(data['width']), int(data['num_blocks']),
                                    tuple(int(m) for m in data['num_modules']),
                                    int(data['num_joints']), int(data['final_conv_kernel']))
  variables = weights.load_torch_checkpoint(case[:-4] + '.pth', config)
  assert_heatmaps_match(config, variables, data)


def _zip_with_pickle(path, payload: bytes):
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', payload)
    z.writestr('archive/version', '3\n')


@pytest.mark.parametrize('module,name', [('os', 'system'), ('builtins', 'eval'),
                                         ('posix', 'system'), ('subprocess', 'call')])
def test_pickle_asking_for_other_globals_is_refused_without_running(tmp_path, module, name):
  marker = tmp_path / 'pwned'
  command = f'touch {marker}' if name != 'eval' else f'open({str(marker)!r}, "w")'
  if name == 'call':
    payload = (b'\x80\x02c' + f'{module}\n{name}\n'.encode() + b']' +
               pickle.dumps('touch', 2)[2:-1] + b'a' + b'\x85R.')
  else:
    payload = b'\x80\x02c' + f'{module}\n{name}\n'.encode() + pickle.dumps(command, 2)[2:-1]
    payload += b'\x85R.'
  path = tmp_path / 'evil.pth'
  _zip_with_pickle(path, payload)
  with pytest.raises(torch_pickle.UnsafeCheckpointError, match=f'{module}.{name}'):
    torch_pickle.load(path)
  assert not marker.exists()
  # A nested global (inside an otherwise valid state_dict) is refused too.
  inner = b'\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00a' + payload[2:-1] + b'u.'
  _zip_with_pickle(path, inner)
  with pytest.raises(torch_pickle.UnsafeCheckpointError):
    weights.read_state_dict(path)
  assert not marker.exists()


def test_legacy_format_pickle_with_code_is_refused(tmp_path):
  marker = tmp_path / 'pwned'
  path = tmp_path / 'evil_legacy.pth'
  with open(path, 'wb') as f:
    for header in (torch_pickle._LEGACY_MAGIC, torch_pickle._LEGACY_PROTOCOL,
                   {'little_endian': True}):
      pickle.dump(header, f, protocol=2)
    f.write(b'\x80\x02cos\nsystem\n' + pickle.dumps(f'touch {marker}', 2)[2:-1] + b'\x85R.')
  with pytest.raises(torch_pickle.UnsafeCheckpointError, match='os.system'):
    torch_pickle.load(path)
  assert not marker.exists()


def test_corrupt_and_missing_files_give_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.pth'):
    weights.read_state_dict(tmp_path / 'nope.pth')
  junk = tmp_path / 'junk.pth'
  junk.write_bytes(b'not a checkpoint at all')
  with pytest.raises(pickle.UnpicklingError, match='junk.pth'):
    weights.read_state_dict(junk)
  truncated = tmp_path / 'truncated.pth'
  truncated.write_bytes(open(os.path.join(REFERENCE, 'w6_b1_m212_k1_j16_160x128.pth'),
                             'rb').read()[:100_000])
  with pytest.raises(pickle.UnpicklingError, match='truncated.pth'):
    weights.read_state_dict(truncated)


def test_mismatched_checkpoint_lists_keys_by_name(tmp_path, small_model_config):
  state = weights.read_state_dict(os.path.join(OFFICIAL, 'small_hrnet.pth'))
  state.pop('stage3.0.branches.2.0.conv1.weight')
  state['head.extra.weight'] = np.zeros((3,), np.float32)
  state['final_layer.weight'] = np.zeros((5, 8, 1, 1), np.float32)
  with pytest.raises(weights.CheckpointMismatchError) as info:
    weights.state_dict_to_variables(state, small_model_config, source='edited.pth')
  err = info.value
  assert err.missing == ['stage3.0.branches.2.0.conv1.weight']
  assert err.unexpected == ['head.extra.weight']
  assert err.misshaped == [('final_layer.weight', (5, 8, 1, 1), (17, 8, 1, 1))]
  for text in ('edited.pth', 'stage3.0.branches.2.0.conv1.weight', 'head.extra.weight',
               'final_layer.weight: (5, 8, 1, 1) vs (17, 8, 1, 1)'):
    assert text in str(err)
  # A W32 model given the W8 checkpoint: every tensor after the stem is mis-shaped.
  with pytest.raises(weights.CheckpointMismatchError, match='wrong shape'):
    weights.load_torch_checkpoint(os.path.join(OFFICIAL, 'small_hrnet.pth'),
                                  models.pose_hrnet_config(32))


def test_export_round_trip_is_exact(tmp_path, small_model_config):
  variables = random_variables(small_model_config, seed=3)  # no init compiled: seconds
  path = tmp_path / 'exported.pth'
  weights.save_torch_checkpoint(variables, path)
  state = weights.read_state_dict(path)
  assert state['stage2.0.branches.0.0.bn1.num_batches_tracked'].dtype == np.int64
  back = weights.load_torch_checkpoint(path, small_model_config)
  flat_a = jax.tree_util.tree_leaves_with_path(variables)
  flat_b = dict(jax.tree_util.tree_leaves_with_path(back))
  assert len(flat_a) == len(flat_b)
  for key, value in flat_a:
    np.testing.assert_array_equal(value, flat_b[key])


def test_imagenet_checkpoint_gives_backbone_and_reports_the_rest():
  config = models.pose_hrnet_config(4, num_blocks=1, num_modules=(1, 1, 1))
  init = random_variables(config)  # what training would start from (no init compiled)
  path = os.path.join(REFERENCE, 'imagenet_style_w4.pth')
  loaded, report = weights.load_pretrained_backbone(path, config, init)
  state = weights.read_state_dict(path)
  np.testing.assert_array_equal(loaded['params']['stage4_0']['branches_3_0']['conv1']['kernel'],
                                state['stage4.0.branches.3.0.conv1.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(loaded['batch_stats']['layer1_2']['bn3']['var'],
                                state['layer1.2.bn3.running_var'])
  np.testing.assert_array_equal(loaded['params']['final_layer']['kernel'],
                                init['params']['final_layer']['kernel'])
  assert sorted(report['kept']) == ['final_layer.bias', 'final_layer.weight']
  assert {'classifier.weight', 'classifier.bias', 'incre_modules.0.0.conv1.weight',
          'final_layer.0.weight', 'stage4.0.fuse_layers.3.0.0.0.weight'} <= set(report['unused'])
  # Strict loading of the same file says what does not fit.
  with pytest.raises(weights.CheckpointMismatchError, match='ImageNet classification checkpoint'):
    weights.load_torch_checkpoint(path, config)


def test_reader_handles_strided_views_and_dtypes(tmp_path):
  base = np.arange(24, dtype=np.float32).reshape(4, 6)
  state = {'a': base, 'b': np.arange(5, dtype=np.int64), 'c': np.float16(2.5) * np.ones((2, 2)),
           'd': np.array([True, False])}
  path = tmp_path / 'dtypes.pth'
  torch_pickle.save_state_dict({k: np.asarray(v) for k, v in state.items()}, path)
  loaded = torch_pickle.load(path)
  for k, v in state.items():
    np.testing.assert_array_equal(loaded[k], v)
    assert loaded[k].dtype == np.asarray(v).dtype
  # A transposed (non-contiguous) view of a storage, as torch saves t.t().
  ref = torch_pickle._TensorRef(torch_pickle._StorageRef('0', np.dtype(np.float32), 24), 1,
                                (6, 3), (1, 6))
  ref.storage.data = base.reshape(-1)
  expected = np.array([[base.flat[1 + i + 6 * j] for j in range(3)] for i in range(6)])
  np.testing.assert_array_equal(ref.materialize(), expected)
