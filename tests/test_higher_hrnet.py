"""HigherHRNet: official parameter counts and names, and parity with the official outputs."""

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import OFFICIAL_HIGHER, REFERENCE_HIGHER, assert_matches_manifest, random_variables
from hrnet_jax import models, weights

# float32 parity, as the top-down model: max |ours - official| <= 1e-4 x max |official|.
RTOL_OF_MAX = 1e-4


def small_higher_config():
  """The model config of the official small fixture model (small_higher_hrnet_config.json)."""
  with open(os.path.join(OFFICIAL_HIGHER, 'small_higher_hrnet_config.json')) as f:
    c = json.load(f)
  return models.higher_hrnet_config(c['width'], c['blocks'], tuple(c['modules']),
                                    deconv_blocks=c['deconv_blocks'])


def assert_outputs_match(config, variables, io_npz):
  images = io_npz['input_nchw'].transpose(0, 2, 3, 1)
  quarter, half = jax.jit(models.HigherHRNet(config).apply)(variables, images)
  for out, name in ((quarter, 'output_stage1_nchw'), (half, 'output_stage2_nchw')):
    expected = io_npz[name].transpose(0, 2, 3, 1)
    assert out.shape == expected.shape, name
    err = np.abs(np.asarray(out) - expected).max() / np.abs(expected).max()
    assert err <= RTOL_OF_MAX, (name, err)


@pytest.mark.parametrize('width', [32, 48])
def test_parameter_count_and_names_match_official_manifest(width):
  ours, official = assert_matches_manifest(
      os.path.join(OFFICIAL_HIGHER, f'manifest_higher_hrnet_w{width}.json'),
      models.higher_hrnet_config(width))
  assert ours == official == {32: 28_645_331, 48: 63_827_139}[width]


def test_official_small_model_reproduces_both_official_outputs():
  config = small_higher_config()
  variables = weights.load_torch_checkpoint(
      os.path.join(OFFICIAL_HIGHER, 'small_higher_hrnet.pth'), config)
  assert_outputs_match(config, variables,
                       np.load(os.path.join(OFFICIAL_HIGHER, 'small_higher_hrnet_io.npz')))


@pytest.mark.parametrize('case', sorted(glob.glob(os.path.join(REFERENCE_HIGHER, 'hw*.npz'))),
                         ids=os.path.basename)
def test_other_architectures_and_sizes_match_torch_reference(case):
  """Made by tests/reference/make_higher_hrnet_cases.py: other widths, kernels, joints, sizes."""
  data = np.load(case)
  config = models.higher_hrnet_config(
      int(data['width']), int(data['num_blocks']), tuple(int(m) for m in data['num_modules']),
      int(data['num_joints']), int(data['deconv_blocks']), int(data['final_conv_kernel']))
  variables = weights.load_torch_checkpoint(case[:-4] + '.pth', config)
  assert_outputs_match(config, variables, data)


def test_output_contract_and_export_round_trip(tmp_path):
  config = models.higher_hrnet_config(4, 1, (1, 1, 1), num_joints=5, deconv_blocks=2)
  model = models.create_model(config)
  assert isinstance(model, models.HigherHRNet)
  x = jax.random.normal(jax.random.key(0), (2, 64, 96, 3))
  variables = random_variables(config)
  quarter, half = jax.jit(model.apply)(variables, x)
  assert quarter.shape == (2, 16, 24, 10) and half.shape == (2, 32, 48, 5)
  assert quarter.dtype == half.dtype == jnp.float32
  path = tmp_path / 'exported.pth'
  weights.save_torch_checkpoint(variables, path)
  loaded = weights.load_torch_checkpoint(path, config)
  for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(loaded)):
    np.testing.assert_array_equal(a, b)
  # A top-down checkpoint is not a HigherHRNet: the head's keys are named.
  top_down = models.pose_hrnet_config(4, 1, (1, 1, 1), num_joints=5)
  weights.save_torch_checkpoint(random_variables(top_down), path)
  with pytest.raises(weights.CheckpointMismatchError, match='final_layers.0.weight'):
    weights.load_torch_checkpoint(path, config)


def test_get_task_picks_the_task_of_the_model_kind():
  from hrnet_jax import config_lib, errors, tasks
  top_down = config_lib.topdown_config(width=4, image_size=(64, 64), sigma=2, batch_size=2,
                                       test_batch_size=2)
  assert isinstance(tasks.get_task(top_down), tasks.TopDownTask)
  config = config_lib.bottomup_config(width=4, input_size=64, batch_size=2)
  task = tasks.get_task(config)
  assert isinstance(task, tasks.BottomUpTask) and task.input_size == (64, 64)
  config.dataset.source = 'tfds'
  with pytest.raises(errors.ConfigError, match="source 'tfds' is top-down only"):
    task.training_data()
  config.model.name = 'pose_regression'
  with pytest.raises(errors.ConfigError, match="'pose_regression'; expected one of"):
    tasks.get_task(config)
