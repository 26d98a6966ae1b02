r"""A small HRNet on the synthetic COCO-format dataset, sized for a CPU.

python launch/train.py --config=configs/demo.py --workdir=DIR

The dataset is written once into ~/.cache/hrnet_jax (or $HRNET_JAX_CACHE) on first use.
"""

import ml_collections

from hrnet_jax import config_lib, models


def get_config() -> ml_collections.ConfigDict:
  """Returns the demo recipe: W16 HRNet at 128x96 on synthetic people."""
  config = config_lib.topdown_config(width=16, image_size=(96, 128), sigma=2, batch_size=32,
                                     test_batch_size=64)
  config.model = models.pose_hrnet_config(16, num_blocks=1, num_modules=(1, 1, 1))
  config.dataset.source = 'synthetic'
  config.dataset.root = ''
  config.dataset.train_split = 'train'
  config.dataset.val_split = 'val'
  config.dataset.synthetic = ml_collections.ConfigDict(
      {'num_train': 2000, 'num_val': 200, 'seed': 0})
  config.optim.num_epochs = 20
  config.optim.lr_steps = (15, 18)
  config.test.use_gt_bbox = True
  config.checkpoint_every_steps = 200
  config.log_every_steps = 20
  return config
