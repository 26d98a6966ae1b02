"""Builders shared by the recipe files in configs/, and strict config overrides."""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from hrnet_jax import models


def topdown_config(*, width: int, image_size: tuple[int, int], sigma: float,
                   batch_size: int, test_batch_size: int) -> ml_collections.ConfigDict:
  """The official top-down COCO recipe (``w{width}_{h}x{w}_adam_lr1e-3.yaml``).

  ``image_size`` is (width, height) as in the official configs.
  """
  width_px, height_px = image_size
  config = ml_collections.ConfigDict()
  config.model = models.pose_hrnet_config(width)

  config.dataset = ml_collections.ConfigDict({
      'name': 'coco',
      'source': 'folder',  # 'tfds': shards of launch/prepare_tfds.py; 'synthetic'
      'root': 'data/coco',  # annotations/person_keypoints_{split}.json and {split}/ images
      'tfds_data_dir': '',
      # source 'synthetic': launch/make_synthetic.py's set, made once in a cache folder
      # (or at root when root is set).
      'synthetic': {'num_train': 2000, 'num_val': 200, 'seed': 0},
      'train_split': 'train2017',
      'val_split': 'val2017',
      'image_size': (width_px, height_px),
      'heatmap_size': (width_px // 4, height_px // 4),
      'sigma': float(sigma),
      'box_padding': 1.25,
      'color_rgb': True,
      'skip_bad_images': False,  # True: drop unreadable JPEGs and count them
  })
  config.augment = ml_collections.ConfigDict({
      'scale_factor': 0.35,
      'rotation_factor': 45.0,
      'rotation_prob': 0.6,
      'flip': True,
      'half_body_prob': 0.3,
      'num_joints_half_body': 8,
  })
  config.loss = ml_collections.ConfigDict({'use_target_weight': True})
  # The official optimizer is plain Adam (its yaml's WD is never passed to it).
  config.optim = ml_collections.ConfigDict({
      'name': 'adam',
      'learning_rate': 1e-3,
      'lr_factor': 0.1,
      'lr_steps': (170, 200),
      'num_epochs': 210,
      'weight_decay': 0.0,
  })
  config.batch_size = batch_size  # global, over all devices and hosts
  config.test = ml_collections.ConfigDict({
      'batch_size': test_batch_size,
      'flip_test': True,
      'shift_heatmap': True,
      'post_process': True,
      'decoder': 'official',  # or 'dark'
      'use_gt_bbox': False,
      'bbox_file': 'person_detection_results/COCO_val2017_detections_AP_H_56_person.json',
      'bbox_thre': 1.0,
      'image_thre': 0.0,
      'in_vis_thre': 0.2,
      'oks_thre': 0.9,
      'nms_thre': 1.0,
      'soft_nms': False,
  })
  config.seed = 0
  config.num_train_steps = -1  # > 0 overrides optim.num_epochs
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.log_every_steps = 100
  config.init_from = ''  # converted official weights or an ImageNet-pretrained .pth
  return config


def override(config: ml_collections.ConfigDict,
             overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """Returns a copy of ``config`` with dotted keys set; a key that does not exist is an error."""
  config = ml_collections.ConfigDict(config.to_dict())
  for dotted, value in overrides.items():
    node, parts = config, dotted.split('.')
    for i, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        where = '.'.join(parts[:i]) or 'the config'
        known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise KeyError(f'config key {dotted!r} does not exist: {where} has no {part!r} '
                       f'(known: {", ".join(known)})')
      if i < len(parts) - 1:
        node = node[part]
    node[parts[-1]] = value
  return config
