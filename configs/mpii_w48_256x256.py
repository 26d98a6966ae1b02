"""HRNet-W48 256x256 on MPII: the official recipe (`mpii/hrnet/w48_256x256_adam_lr1e-3.yaml`).

python launch/train.py --config=configs/mpii_w48_256x256.py --workdir=DIR \
    --config.init_from=hrnetv2_w48_imagenet_pretrained.pth

Reads the official layout (data/mpii/annot/{train,valid}.json, images/, annot/gt_valid.mat).
The official README gives no W48 MPII figure; mmpose reports mean PCKh@0.5 90.1 on val.
"""

import ml_collections

from hrnet_jax import config_lib


def get_config() -> ml_collections.ConfigDict:
  """Returns the training and evaluation config of this recipe."""
  return config_lib.mpii_config(width=48)
