"""HRNet-W32 256x192 on CrowdPose, top-down: mmpose's recipe (the COCO recipe, Adam 5e-4).

python launch/train.py --config=configs/crowdpose_w32_256x192.py --workdir=DIR

Trains on trainval; scores test on person detections with the crowdpose-api
(data/crowdpose/json/crowdpose_{trainval,test}.json, images/, the detection file below).
mmpose reports AP 67.5 (AP easy 77.0, medium 68.7, hard 55.3) on CrowdPose test.
"""

import ml_collections

from hrnet_jax import config_lib


def get_config() -> ml_collections.ConfigDict:
  """Returns the training and evaluation config of this recipe."""
  config = config_lib.crowdpose_data(
      config_lib.topdown_config(width=32, image_size=(192, 256), sigma=2, batch_size=128,
                                test_batch_size=128, keypoints='crowdpose'))
  config.test.bbox_file = 'json/det_for_crowd_test_0.1_0.5.json'
  config.optim.learning_rate = 5e-4
  return config
