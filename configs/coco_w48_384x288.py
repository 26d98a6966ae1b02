"""HRNet-W48 384x288 on COCO: the official recipe (`w48_384x288_adam_lr1e-3.yaml`).

python launch/train.py --config=configs/coco_w48_384x288.py --workdir=DIR
"""

import ml_collections

from hrnet_jax import config_lib


def get_config() -> ml_collections.ConfigDict:
  """Returns the training and evaluation config of this recipe."""
  return config_lib.topdown_config(width=48, image_size=(288, 384), sigma=3, batch_size=96,
                                   test_batch_size=96)
