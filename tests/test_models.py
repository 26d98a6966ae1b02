"""PoseHRNet topology: parameter counts and names against the official manifests, BN, dtypes."""

import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import OFFICIAL, assert_matches_manifest, random_variables
from hrnet_jax import layers, models, weights


@pytest.mark.parametrize('width', [32, 48])
def test_parameter_count_and_names_match_official_manifest(width):
  ours, official = assert_matches_manifest(
      os.path.join(OFFICIAL, f'manifest_pose_hrnet_w{width}.json'), models.pose_hrnet_config(width))
  assert ours == official == {32: 28_536_113, 48: 63_595_745}[width]


def test_output_shape_and_input_validation(small_model_config):
  model = models.PoseHRNet(small_model_config)
  x = jnp.zeros((3, 64, 96, 3))
  variables = random_variables(small_model_config)  # (compiled, not op by op: seconds)
  assert jax.jit(model.apply)(variables, x).shape == (3, 16, 24, 17)
  with pytest.raises(ValueError, match='divisible by 32'):
    jax.eval_shape(model.apply, variables, jnp.zeros((1, 70, 96, 3)))


def test_final_kernel_and_joints_come_from_config():
  config = models.pose_hrnet_config(4, num_blocks=2, num_modules=(1, 2, 1), num_joints=5,
                                    final_conv_kernel=3)
  shapes = weights.variable_shapes(config)
  assert shapes['params']['final_layer']['kernel'].shape == (3, 3, 4, 5)
  assert 'branches_0_1' in shapes['params']['stage3_1']  # 2 blocks, 2 modules in stage 3
  assert 'stage3_2' not in shapes['params']
  with pytest.raises(ValueError, match='final_conv_kernel'):
    models.pose_hrnet_config(4, final_conv_kernel=5)


def test_batchnorm_momentum_and_epsilon_are_official(small_model_config):
  """Running stats move 10% toward the batch (torch momentum 0.1); eps is 1e-5."""
  model = models.PoseHRNet(small_model_config)
  x = jax.random.normal(jax.random.key(1), (4, 64, 64, 3))
  variables = random_variables(small_model_config)
  variables['batch_stats'] = jax.tree_util.tree_map_with_path(  # the initial stats: 0 and 1
      lambda path, a: np.full_like(a, float(path[-1].key == 'var')), variables['batch_stats'])
  _, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(
      variables, x)
  # bn1 sees conv1's output; recompute it by hand.
  kernel = variables['params']['conv1']['kernel']
  y = jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  batch_mean = np.asarray(y.mean(axis=(0, 1, 2)))
  batch_var = np.asarray(y.var(axis=(0, 1, 2)))
  new = updates['batch_stats']['bn1']
  np.testing.assert_allclose(new['mean'], 0.1 * batch_mean, rtol=1e-4, atol=1e-9)
  np.testing.assert_allclose(new['var'], 0.9 + 0.1 * batch_var, rtol=1e-4)
  assert layers.batch_norm(False, dtype=jnp.float32, name='bn').epsilon == 1e-5
  assert layers.batch_norm(False, dtype=jnp.float32, name='bn').momentum == 0.9


def test_bfloat16_compute_keeps_float32_params(small_model_config):
  config = small_model_config.copy_and_resolve_references()
  config.dtype = 'bfloat16'
  x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
  v32 = random_variables(small_model_config)
  v16 = jax.eval_shape(models.PoseHRNet(config).init, jax.random.key(0), x)
  assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(v16))
  out32 = jax.jit(models.PoseHRNet(small_model_config).apply)(v32, x)
  out16 = jax.jit(models.PoseHRNet(config).apply)(v32, x)
  assert out16.dtype == jnp.float32
  # bf16 has an 8-bit mantissa: agree to a few percent of the output range, not exactly.
  scale = float(jnp.abs(out32).max())
  assert 0 < float(jnp.abs(out16 - out32).max()) < 0.05 * scale
  config.dtype = 'float64'
  with pytest.raises(ValueError, match='model.dtype'):
    jax.eval_shape(models.PoseHRNet(config).init, jax.random.key(0), x)


def test_create_model_rejects_unknown_name(small_model_config):
  config = small_model_config.copy_and_resolve_references()
  config.name = 'pose_resnet'
  with pytest.raises(ValueError, match='pose_resnet'):
    models.create_model(config)


def test_variable_tree_is_flat_like_the_official_state_dict(small_model_config):
  shapes = weights.variable_shapes(small_model_config)
  top = set(shapes['params'])
  assert {'conv1', 'bn1', 'conv2', 'bn2', 'layer1_0', 'transition1_0', 'stage2_0',
          'final_layer'} <= top
  flat = flax.traverse_util.flatten_dict(shapes['params'])
  assert ('stage4_0', 'fuse_layers_0_3', '0', 'kernel') in flat
  assert ('stage4_0', 'fuse_layers_3_0', '2_0', 'kernel') not in flat  # last module: 1 output
