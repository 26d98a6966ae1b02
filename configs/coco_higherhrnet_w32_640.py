"""HigherHRNet-W32 640x640 on COCO, bottom-up: the official recipe (`w32_640_adam_lr1e-3.yaml`).

Adam 1e-3, x0.1 at epochs 200 and 260 of 300; heatmap loss at 1/4 and 1/2, associative-
embedding loss (exp, push and pull factors 1e-3) on the 1/4 tags; flip test, one scale.

python launch/train.py --config=configs/coco_higherhrnet_w32_640.py --workdir=DIR
"""

import ml_collections

from hrnet_jax import config_lib


def get_config() -> ml_collections.ConfigDict:
  """Returns the training and evaluation config of this recipe."""
  return config_lib.bottomup_config(width=32, input_size=640, batch_size=96)
