"""The small HRNet of the official reference fixtures (W8, one block and one module a stage).

For smoke runs and tests: same recipe as configs/coco_w32.py, a model of 0.2M parameters.
python launch/convert_weights.py --checkpoint=tests/fixtures/official_hrnet/small_hrnet.pth \
    --config=configs/small_hrnet.py --output=DIR
"""

import ml_collections

from hrnet_jax import config_lib, models


def get_config() -> ml_collections.ConfigDict:
  """Returns the coco_w32 recipe with the small fixture architecture and 128x96 inputs."""
  config = config_lib.topdown_config(width=32, image_size=(96, 128), sigma=2, batch_size=32,
                                     test_batch_size=32)
  config.model = models.pose_hrnet_config(8, num_blocks=1, num_modules=(1, 1, 1))
  return config
