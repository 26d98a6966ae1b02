"""HRNet-W32 256x192 on PoseTrack18, top-down: a COCO model fine-tuned, as mmpose's recipe.

python launch/train.py --config=configs/posetrack18_w32_256x192.py --workdir=DIR \
    --config.init_from=hrnet_w32_coco_256x192

init_from: a COCO model (the zoo's mmpose W32, as mmpose's recipe; or the official .pth or
its launch/convert_weights.py folder), all 17 joints taken over (PoseTrack's head_bottom and
head_top learn from COCO's eyes).

Reads the annotations as shipped (data/posetrack18/annotations/{train,val}/ per-video files,
or a merged file with --config.dataset.annotations=annotations/posetrack18_{split}.json;
file names relative to the dataset root); scores val by poseval's mAP and OKS AP.
mmpose reports total mAP 83.4 on val with ground-truth boxes, 76.9 with its detections.
"""

import ml_collections

from hrnet_jax import config_lib


def get_config() -> ml_collections.ConfigDict:
  """Returns the training and evaluation config of this recipe."""
  return config_lib.posetrack18_config(width=32)
