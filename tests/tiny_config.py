"""A tiny top-down config for training tests: W4 HRNet, 64x64 inputs, batch 8.

The dataset root is set by each test (a synthetic folder in a temporary directory).
"""

import ml_collections

from hrnet_jax import config_lib, models


def get_config() -> ml_collections.ConfigDict:
  """Returns the tiny recipe."""
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
