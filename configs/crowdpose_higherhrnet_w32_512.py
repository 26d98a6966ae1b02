"""HigherHRNet-W32 512x512 on CrowdPose, bottom-up: the official recipe
(`crowd_pose/higher_hrnet/w32_512_adam_lr1e-3.yaml`).

python launch/train.py --config=configs/crowdpose_higherhrnet_w32_512.py --workdir=DIR

The COCO recipe's training and test with the 14 CrowdPose joints; trains on trainval, scores
test with the crowdpose-api (data/crowdpose/json/crowdpose_{trainval,test}.json, images/;
trainval.json is train + val, as HigherHRNet's tools/crowdpose_concat_train_val.py makes it).
Published: HigherHRNet on CrowdPose test AP 65.9 (67.6 multi-scale, HigherHRNet+; the
README does not name the backbone); mmpose's W32 512 reproduction AP 65.5.
"""

import ml_collections

from hrnet_jax import config_lib


def get_config() -> ml_collections.ConfigDict:
  """Returns the training and evaluation config of this recipe."""
  return config_lib.crowdpose_data(
      config_lib.bottomup_config(width=32, input_size=512, batch_size=96,
                                 keypoints='crowdpose'))
