"""Recipe configs, strict overrides, orbax variable checkpoints and launch/convert_weights.py."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import OFFICIAL, REPO
from hrnet_jax import checkpoints, config_lib, estimator, models, weights

RECIPES = {
    # file: (width, image (w, h), sigma, global batch)
    'coco_w32': (32, (192, 256), 2.0, 128),
    'coco_w32_384x288': (32, (288, 384), 3.0, 128),
    'coco_w48': (48, (192, 256), 2.0, 128),
    'coco_w48_384x288': (48, (288, 384), 3.0, 96),
}


def load_config(name):
  return config_lib.load_recipe(os.path.join(REPO, 'configs', f'{name}.py'))


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_recipes_have_the_official_values(name):
  width, image_size, sigma, batch = RECIPES[name]
  config = load_config(name)
  assert config.model.width == width and config.model.num_modules == (1, 4, 3)
  assert config.model.num_blocks == 4 and config.model.final_conv_kernel == 1
  assert config.dataset.image_size == image_size
  assert config.dataset.heatmap_size == (image_size[0] // 4, image_size[1] // 4)
  assert config.dataset.sigma == sigma and config.batch_size == batch
  assert config.optim.name == 'adam' and config.optim.learning_rate == 1e-3
  assert config.optim.weight_decay == 0.0
  assert config.optim.lr_steps == (170, 200) and config.optim.num_epochs == 210
  assert config.optim.lr_factor == 0.1
  assert (config.augment.scale_factor, config.augment.rotation_factor) == (0.35, 45.0)
  assert (config.augment.half_body_prob, config.augment.num_joints_half_body) == (0.3, 8)
  assert config.test.flip_test and config.test.shift_heatmap and config.test.post_process
  assert (config.test.in_vis_thre, config.test.oks_thre, config.test.image_thre) == (0.2, 0.9, 0.0)


def test_override_sets_nested_keys_and_rejects_unknown_ones():
  config = load_config('coco_w32')
  changed = config_lib.override(config, {'model.width': 48, 'test.oks_thre': 0.5})
  assert changed.model.width == 48 and changed.test.oks_thre == 0.5
  assert config.model.width == 32  # the original is untouched
  with pytest.raises(KeyError, match="'test.oks_threshold'.*has no 'oks_threshold'"):
    config_lib.override(config, {'test.oks_threshold': 0.5})
  with pytest.raises(KeyError, match="'nope.x'"):
    config_lib.override(config, {'nope.x': 1})


def test_variables_checkpoint_round_trip_and_mismatch(tmp_path, small_model_config):
  variables = weights.load_torch_checkpoint(os.path.join(OFFICIAL, 'small_hrnet.pth'),
                                            small_model_config)
  out = tmp_path / 'ckpt'
  checkpoints.save_variables(out, variables, {'note': 'test'})
  restored = checkpoints.restore_variables(out, small_model_config)
  for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(restored)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(FileExistsError, match='refusing to overwrite'):
    checkpoints.save_variables(out, variables)
  other = models.pose_hrnet_config(8, num_blocks=2, num_modules=(1, 1, 1))
  with pytest.raises(weights.CheckpointMismatchError, match='90 key') as info:
    checkpoints.restore_variables(out, other)
  assert 'params/stage2_0/branches_0_1/conv1/kernel' in info.value.missing
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    checkpoints.restore_variables(tmp_path / 'absent', small_model_config)


def run_convert(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, 'launch', 'convert_weights.py'),
                         *args], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_convert_weights_cli_writes_a_restorable_checkpoint(tmp_path, small_model_config):
  out = tmp_path / 'converted'
  pth = os.path.join(OFFICIAL, 'small_hrnet_checkpoint.pth')
  result = run_convert(f'--checkpoint={pth}', '--config=configs/small_hrnet.py', f'--output={out}')
  assert result.returncode == 0, result.stderr
  assert 'Heatmaps of a (1, 128, 96, 3) input: (1, 32, 24, 17)' in result.stdout
  with open(out / checkpoints.METADATA_FILE) as f:
    assert json.load(f)['num_params'] == 544_505
  restored = checkpoints.restore_variables(out, small_model_config)
  direct = weights.load_torch_checkpoint(pth, small_model_config)
  for a, b in zip(jax.tree_util.tree_leaves(direct), jax.tree_util.tree_leaves(restored)):
    np.testing.assert_array_equal(a, b)
  # The folder keeps the whole recipe (config.json): a model by its folder alone.
  config, variables, _ = estimator.load_model(str(out))
  assert config.to_dict() == load_config('small_hrnet').to_dict()
  for a, b in zip(jax.tree_util.tree_leaves(direct), jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(a, b)

  # A second run must not overwrite it; a bad config key and a wrong model are clear errors.
  again = run_convert(f'--checkpoint={pth}', '--config=configs/small_hrnet.py', f'--output={out}')
  assert again.returncode == 1 and 'refusing to overwrite' in again.stderr
  typo = run_convert(f'--checkpoint={pth}', '--config=configs/small_hrnet.py',
                     '--config.model.widht=8', f'--output={tmp_path / "typo"}')
  assert typo.returncode == 2 and "'widht'" in typo.stderr and 'does not exist' in typo.stderr
  wrong = run_convert(f'--checkpoint={pth}', '--config=configs/coco_w32.py',
                      f'--output={tmp_path / "wrong"}')
  assert wrong.returncode == 1 and 'of the wrong shape' in wrong.stderr
  assert 'Traceback' not in wrong.stderr and not (tmp_path / 'wrong').exists()
