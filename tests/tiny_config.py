"""A tiny top-down config for training tests: W4 HRNet, 64x64 inputs, batch 8.

The dataset root is set by each test (a synthetic folder in a temporary directory).
``--config=tests/tiny_config.py:RECIPE`` is instead the recipe ``configs/RECIPE.py`` with
the same tiny model and sizes (its keypoint set, dataset format and evaluators kept).
"""

import os

import ml_collections

from hrnet_jax import config_lib, models

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')


def get_config(recipe: str = '') -> ml_collections.ConfigDict:
  """Returns the tiny recipe, or ``configs/{recipe}.py`` shrunk."""
  if recipe:
    return shrink(load_recipe(recipe))
  config = config_lib.topdown_config(width=4, image_size=(64, 64), sigma=2, batch_size=8,
                                     test_batch_size=8)
  config.model = models.pose_hrnet_config(4, num_blocks=1, num_modules=(1, 1, 1))
  config.dataset.train_split = 'train'
  config.dataset.val_split = 'val'
  config.test.use_gt_bbox = True
  config.num_train_steps = 8
  config.checkpoint_every_steps = 4
  config.log_every_steps = 1
  config.eval_every_steps = -1  # the tests that evaluate turn it on
  return config


def load_recipe(name: str) -> ml_collections.ConfigDict:
  """``configs/{name}.py``'s config."""
  return config_lib.load_recipe(os.path.join(CONFIGS, f'{name}.py'))


def shrink(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The recipe with a W4 model of its kind and joints, 64-pixel inputs, batch 4, 2 steps."""
  k = config.model.num_joints
  if config.model.name == models.higher_hrnet_config(4).name:
    config.model = models.higher_hrnet_config(4, 1, (1, 1, 1), num_joints=k, deconv_blocks=1)
    config.dataset.input_size = 64
  else:
    config.model = models.pose_hrnet_config(4, 1, (1, 1, 1), num_joints=k, stem_blocks=1)
    config.dataset.image_size = (64, 64)
    config.dataset.heatmap_size = (16, 16)
    config.test.batch_size = 4
  config.batch_size = 4
  config.num_train_steps = 2
  config.checkpoint_every_steps = 2
  config.log_every_steps = 1
  config.eval_every_steps = 0  # at the end
  config.init_from = ''
  return config
