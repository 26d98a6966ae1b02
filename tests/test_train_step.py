"""The official loss and one real train step on tiny data."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hrnet_jax import losses, models, steps, train_lib


def test_joints_mse_matches_the_official_formula():
  rng = np.random.default_rng(0)
  pred = rng.normal(size=(2, 4, 3, 5)).astype(np.float32)
  target = rng.normal(size=(2, 4, 3, 5)).astype(np.float32)
  weight = rng.uniform(size=(2, 5, 1)).astype(np.float32)
  # The official loop: for each joint, 0.5 * MSE(pred_j * w_j, gt_j * w_j); mean over joints.
  expected = np.mean([0.5 * np.mean((pred[..., j] * weight[:, None, None, j, 0] -
                                     target[..., j] * weight[:, None, None, j, 0])**2)
                      for j in range(5)])
  np.testing.assert_allclose(losses.joints_mse_loss(pred, target, weight), expected, rtol=1e-6)
  np.testing.assert_allclose(losses.joints_mse_loss(pred, target, None),
                             0.5 * np.mean((pred - target)**2), rtol=1e-6)


def test_train_steps_lower_the_loss_on_a_fixed_batch(small_model_config):
  model = models.PoseHRNet(small_model_config)
  state = steps.create_train_state(model, optax.adam(1e-3), jax.random.key(0), (2, 64, 64, 3))
  yy, xx = jnp.mgrid[0:16, 0:16]
  blob = jnp.exp(-((yy - 8.0)**2 + (xx - 5.0)**2) / 8.0)
  batch = {'image': jax.random.normal(jax.random.key(1), (2, 64, 64, 3)),
           'heatmaps': jnp.broadcast_to(blob[None, :, :, None], (2, 16, 16, 17)),
           'target_weight': jnp.ones((2, 17, 1))}
  step = jax.jit(steps.train_step)
  state, first = step(state, batch, jax.random.key(2))
  for _ in range(5):
    state, metrics = step(state, batch, jax.random.key(2))
  assert int(state.step) == 6
  assert float(metrics['loss']) < 0.9 * float(first['loss'])
  assert np.isfinite(float(metrics['grad_norm']))


def test_use_target_weight_false_weighs_every_joint_equally(small_model_config):
  """config.loss.use_target_weight=False: the task's step ignores the batch's target weights."""
  from hrnet_jax import config_lib, tasks
  config = config_lib.topdown_config(width=4, image_size=(64, 64), sigma=2, batch_size=2,
                                     test_batch_size=2)
  config.model = small_model_config
  model = models.PoseHRNet(small_model_config)
  state = steps.create_train_state(model, optax.sgd(0.0), jax.random.key(0), (2, 64, 64, 3))
  rng = np.random.default_rng(3)
  batch = {'image': jnp.asarray(rng.normal(size=(2, 64, 64, 3)), jnp.float32),
           'heatmaps': jnp.asarray(rng.uniform(size=(2, 16, 16, 17)), jnp.float32),
           'target_weight': jnp.asarray(rng.integers(0, 2, (2, 17, 1)), jnp.float32)}
  heatmaps = model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                         batch['image'], train=True, mutable=['batch_stats'])[0]
  losses_by_setting = {}
  for use in (True, False):
    config.loss.use_target_weight = use
    _, metrics = jax.jit(tasks.get_task(config).train_step())(state, batch, jax.random.key(0))
    losses_by_setting[use] = float(metrics['loss'])
  # float32 reductions of the same terms: 1e-5 relative.
  np.testing.assert_allclose(losses_by_setting[True], losses.joints_mse_loss(
      heatmaps, batch['heatmaps'], batch['target_weight']), rtol=1e-5)
  np.testing.assert_allclose(losses_by_setting[False], losses.joints_mse_loss(
      heatmaps, batch['heatmaps'], None), rtol=1e-5)
  assert abs(losses_by_setting[True] - losses_by_setting[False]) > 0.1 * losses_by_setting[False]


def test_init_from_reads_a_pose_pth_an_imagenet_pth_and_a_converted_folder(tmp_path):
  import os
  from conftest import OFFICIAL, REFERENCE, small_config
  from hrnet_jax import checkpoints, config_lib, weights

  def config_for(model_config, path):
    config = config_lib.topdown_config(width=4, image_size=(64, 64), sigma=2, batch_size=2,
                                       test_batch_size=2)
    config.model, config.init_from = model_config, path
    return config

  def init(model_config):  # random variables of the model's shapes, without compiling init
    from conftest import random_variables
    return random_variables(model_config)

  pose_config = small_config()
  pose_pth = os.path.join(OFFICIAL, 'small_hrnet.pth')
  expected = weights.load_torch_checkpoint(pose_pth, pose_config)
  got = train_lib.initial_variables(config_for(pose_config, pose_pth), init(pose_config))
  jax.tree.map(np.testing.assert_array_equal, got, expected)
  folder = checkpoints.save_variables(tmp_path / 'converted', expected)
  got = train_lib.initial_variables(config_for(pose_config, folder), init(pose_config))
  jax.tree.map(np.testing.assert_array_equal, got, expected)

  w4 = models.pose_hrnet_config(4, num_blocks=1, num_modules=(1, 1, 1))
  imagenet = os.path.join(REFERENCE, 'imagenet_style_w4.pth')
  base = init(w4)
  expected, _ = weights.load_pretrained_backbone(imagenet, w4, base)
  got = train_lib.initial_variables(config_for(w4, imagenet), base)
  jax.tree.map(np.testing.assert_array_equal, got, dict(expected))
