"""HRNet-W32 256x256 on MPII: the official recipe (`mpii/hrnet/w32_256x256_adam_lr1e-3.yaml`).

python launch/train.py --config=configs/mpii_w32_256x256.py --workdir=DIR \
    --config.init_from=hrnet_w32-36af842e.pth

Reads the official layout (data/mpii/annot/{train,valid}.json, images/, annot/gt_valid.mat).
Official (README, flip test): mean PCKh@0.5 90.3 on MPII val (Mean@0.1 37.7).
"""

import ml_collections

from hrnet_jax import config_lib


def get_config() -> ml_collections.ConfigDict:
  """Returns the training and evaluation config of this recipe."""
  return config_lib.mpii_config(width=32)
