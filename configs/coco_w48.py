"""HRNet-W48 256x192 on COCO: the official recipe (`w48_256x192_adam_lr1e-3.yaml`).

python launch/train.py --config=configs/coco_w48.py --workdir=DIR
"""

import ml_collections

from hrnet_jax import config_lib


def get_config() -> ml_collections.ConfigDict:
  """Returns the training and evaluation config of this recipe."""
  return config_lib.topdown_config(width=48, image_size=(192, 256), sigma=2, batch_size=128,
                                   test_batch_size=128)
