"""The CPU fast path (model.fast_path, hrnet_jax.fast_conv) computes what plain XLA computes."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hrnet_jax import errors, fast_conv, layers, models, steps


def _tiny_config(fast_path: str):
  config = models.pose_hrnet_config(4, num_blocks=1, num_modules=(1, 1, 1), stem_blocks=1)
  config.fast_path = fast_path
  return config


def _assert_close_to_scale(actual, expected, rtol, what=''):
  """Every leaf within ``rtol`` x the largest magnitude of the expected leaf."""
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected)):
    scale = float(np.max(np.abs(b))) or 1.0
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale,
                               err_msg=what + jax.tree_util.keystr(path))


def test_relu_has_the_values_and_gradient_of_nn_relu():
  x = jnp.array([-2.0, -0.0, 0.0, 1e-30, 3.0, np.nan])
  np.testing.assert_array_equal(fast_conv.relu(x), nn.relu(x))  # NaN stays NaN
  # At 0 both pass no gradient (jax.nn.relu's convention); at NaN they differ (not compared).
  x = x[:-1]
  np.testing.assert_array_equal(jax.grad(lambda x: fast_conv.relu(x).sum())(x),
                                jax.grad(lambda x: nn.relu(x).sum())(x))
  assert fast_conv.relu(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


# Every convolution of HRNet and HigherHRNet: (kernel, stride, input channels, features, bias).
CONV_KINDS = {
    '3x3': (3, 1, 8, 8, False),                  # blocks, transitions to a new width
    '3x3_stride2': (3, 2, 8, 16, False),         # stem, downsampling transitions, fuse layers
    '1x1': (1, 1, 16, 8, False),                 # Bottleneck conv1/conv3, upsampling fuse layers
    '1x1_downsample': (1, 1, 8, 32, False),      # Bottleneck downsample
    '1x1_stride2': (1, 2, 8, 16, False),         # a strided shortcut (not in the recipes)
    'final_kernel1': (1, 1, 8, 17, True),
    'final_kernel3': (3, 1, 8, 17, True),
}


@pytest.mark.parametrize('kind', sorted(CONV_KINDS))
def test_conv_gradients_equal_plain_xla(kind):
  kernel, stride, cin, features, bias = CONV_KINDS[kind]
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 8, 12, cin)), jnp.float32)
  make = functools.partial(layers.conv, features, kernel, stride, dtype=jnp.float32, name='c',
                           use_bias=bias)
  params = make().init(jax.random.key(0), x)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
  probe = jnp.asarray(rng.normal(size=make().apply(params, x).shape), jnp.float32)

  def loss(params, x, fast):
    return jnp.sum(make(fast=fast).apply(params, x) * probe)

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
  custom = 'custom_vjp_call' in str(jax.make_jaxpr(loss, static_argnums=2)(params, x, True))
  assert custom == (kernel == 1)  # only 1x1 convolutions take the matrix-product gradient
  np.testing.assert_array_equal(make(fast=True).apply(params, x), make().apply(params, x))
  # float32 sums of 2 x 8 x 12 products in another order: 1e-5 of the gradient's scale.
  _assert_close_to_scale(grad(params, x, True), grad(params, x, False), 1e-5, kind)


def test_bfloat16_weight_gradient_keeps_the_kernel_dtype():
  x = jnp.ones((1, 4, 4, 8), jnp.bfloat16)
  w = jnp.ones((1, 1, 8, 16), jnp.bfloat16)
  dw = jax.grad(lambda w: fast_conv.conv_general_dilated(
      x, w, (1, 1), ((0, 0), (0, 0)), dimension_numbers=fast_conv.NHWC).sum())(w)
  assert dw.dtype == jnp.bfloat16
  np.testing.assert_array_equal(dw.astype(jnp.float32), 16.0)  # 4 x 4 pixels of ones


def test_a_whole_train_step_equals_plain_xla():
  images = (2, 64, 64, 3)
  rng = np.random.default_rng(1)
  batch = {'image': jnp.asarray(rng.normal(size=images), jnp.float32),
           'heatmaps': jnp.asarray(rng.uniform(size=(2, 16, 16, 17)), jnp.float32),
           'target_weight': jnp.asarray(rng.integers(0, 2, (2, 17, 1)), jnp.float32)}
  lr = 1.0  # SGD: the update is the gradient itself, so it is compared to the gradient's scale
  results = {}
  for fast_path in ('on', 'off'):
    model = models.create_model(_tiny_config(fast_path))
    state = steps.create_train_state(model, optax.sgd(lr), jax.random.key(0), images)
    step = functools.partial(steps.train_step)  # a jit cache entry of its own
    jaxpr = str(jax.make_jaxpr(step)(state, batch, jax.random.key(2)))
    assert ('dot_general' in jaxpr) == (fast_path == 'on')  # the 1x1 weight gradients
    new_state, metrics = jax.jit(step)(state, batch, jax.random.key(2))
    grads = jax.tree.map(lambda new, old: (old - new) / lr, new_state.params, state.params)
    results[fast_path] = new_state, metrics, grads
  (fast, fast_metrics, fast_grads), (plain, plain_metrics, plain_grads) = results.values()
  assert jax.tree.structure(fast.params) == jax.tree.structure(plain.params)
  # float32 rounding only (another fusion, another summation order), amplified by train-mode
  # BatchNorm: measured 1.1e-6 of a gradient's scale, 2e-5 allowed. The loss, gradient norm
  # and BN statistics came out identical; 1e-6 (1e-5 for the norm) allowed.
  _assert_close_to_scale(fast_grads, plain_grads, 2e-5, 'update ')
  _assert_close_to_scale(fast.batch_stats, plain.batch_stats, 1e-6, 'batch_stats ')
  np.testing.assert_allclose(fast_metrics['loss'], plain_metrics['loss'], rtol=1e-6)
  np.testing.assert_allclose(fast_metrics['grad_norm'], plain_metrics['grad_norm'], rtol=1e-5)


def test_fast_path_key_auto_on_off_and_old_configs(monkeypatch):
  config = _tiny_config('auto')
  assert models.use_fast_path(config) == (jax.default_backend() == 'cpu')
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert not models.use_fast_path(config)
  config.fast_path = 'on'
  assert models.use_fast_path(config)
  config.fast_path = 'off'
  assert not models.use_fast_path(config)
  del config['fast_path']  # a config saved before the key existed
  assert not models.use_fast_path(config)
  config.fast_path = 'xla'
  with pytest.raises(errors.UserError, match='fast_path'):
    models.use_fast_path(config)


@pytest.mark.parametrize('build', [models.pose_hrnet_config, models.higher_hrnet_config])
def test_the_variables_do_not_depend_on_the_path(build):
  shapes = {}
  for fast_path in ('on', 'off'):
    config = build(4, num_blocks=1, num_modules=(1, 1, 1), stem_blocks=1)
    config.fast_path = fast_path
    model = models.create_model(config)
    shapes[fast_path] = jax.eval_shape(model.init, jax.random.key(0),
                                       jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert jax.tree.map(lambda s: (s.shape, s.dtype), shapes['on']) == jax.tree.map(
      lambda s: (s.shape, s.dtype), shapes['off'])
