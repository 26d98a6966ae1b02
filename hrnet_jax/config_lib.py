"""Builders shared by the recipe files in configs/, and strict config overrides."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import ml_collections

from hrnet_jax import errors, models
from hrnet_jax import keypoints as kp


def keypoints_config(keypoint_set: str | kp.KeypointSet) -> ml_collections.ConfigDict:
  """A config's ``keypoints`` section: a preset's name (``kp.PRESETS``) or any set."""
  if isinstance(keypoint_set, str):
    keypoint_set = kp.preset(keypoint_set)
  return ml_collections.ConfigDict(keypoint_set.validate().to_dict())


def topdown_config(*, width: int, image_size: tuple[int, int], sigma: float,
                   batch_size: int, test_batch_size: int,
                   keypoints: str | kp.KeypointSet = 'coco') -> ml_collections.ConfigDict:
  """The official top-down COCO recipe (``w{width}_{h}x{w}_adam_lr1e-3.yaml``).

  ``image_size`` is (width, height) as in the official configs; ``keypoints`` the joints.
  """
  width_px, height_px = image_size
  config = ml_collections.ConfigDict()
  config.keypoints = keypoints_config(keypoints)
  config.model = models.pose_hrnet_config(width, num_joints=len(config.keypoints.names))

  config.dataset = ml_collections.ConfigDict({
      'source': 'folder',  # 'tfds': shards of launch/prepare_tfds.py; 'synthetic'
      'root': 'data/coco',  # annotations/person_keypoints_{split}.json and {split}/ images
      # How the annotations are laid out: 'coco' (also CrowdPose), 'mpii' (the official
      # json) or 'posetrack18' (per-video files or one merged file).
      'format': 'coco',
      # The annotation file (PoseTrack18: or folder) relative to root, {split} filled in;
      # '' is the format's default (input_pipeline/coco.py DEFAULT_ANNOTATIONS).
      'annotations': '',
      'tfds_data_dir': '',
      # source 'synthetic': launch/make_synthetic.py's set, made once in a cache folder
      # (or at root when root is set).
      'synthetic': {'num_train': 2000, 'num_val': 200, 'seed': 0, 'max_people': 3},
      'train_split': 'train2017',
      'val_split': 'val2017',
      'image_size': (width_px, height_px),
      'heatmap_size': (width_px // 4, height_px // 4),
      'sigma': float(sigma),
      'box_padding': 1.25,
      'skip_bad_images': False,  # True: leave out missing or unreadable images, counted
      # True: UDP training (Huang et al., CVPR 2020, as mmpose 1.x's UDP recipes): crops by
      # UDP's warp (box onto pixel centres 0..size-1, x and y zoomed apart) and targets
      # centred at the exact sub-pixel joint. Evaluate such models with test.decoder='udp'.
      'udp': False,
  })
  config.augment = ml_collections.ConfigDict({
      'scale_factor': 0.35,
      'rotation_factor': 45.0,
      'rotation_prob': 0.6,
      'flip': 0.5,  # probability of a horizontal flip; 0 = off
      'half_body_prob': 0.3,
      'num_joints_half_body': 8,
  })
  # False: every joint weighs 1 in the loss (the official USE_TARGET_WEIGHT)
  config.loss = ml_collections.ConfigDict({'use_target_weight': True})
  config.optim = _adam(lr_steps=(170, 200), num_epochs=210)
  config.batch_size = batch_size  # global, over all devices and hosts
  config.test = ml_collections.ConfigDict({
      'batch_size': test_batch_size,
      'flip_test': True,
      'shift_heatmap': True,
      'post_process': True,
      # 'official' (argmax, quarter offset), 'dark' (DARK), or 'udp' (mmpose 1.x's UDP
      # decoding, with UDP's eval crops and map back; needs shift_heatmap=False)
      'decoder': 'official',
      # The DARK / UDP blur kernel (odd). 11 matches sigma 2; for the sigma-3 384x288 models
      # mmpose 0.x uses 17, 1.x keeps 11 (but 17 for res152 DARK).
      'blur_kernel': 11,
      'use_gt_bbox': False,
      'bbox_file': 'person_detection_results/COCO_val2017_detections_AP_H_56_person.json',
      'image_thre': 0.0,
      'in_vis_thre': 0.2,
      'oks_thre': 0.9,
      'soft_nms': False,
  })
  _add_run_settings(config)
  return config


def _adam(*, lr_steps: tuple[int, int], num_epochs: int) -> ml_collections.ConfigDict:
  """The official optimizer: plain Adam 1e-3 (the yaml's WD is never passed to it), x0.1 steps."""
  return ml_collections.ConfigDict({
      'name': 'adam',
      'learning_rate': 1e-3,
      'lr_factor': 0.1,
      'lr_steps': lr_steps,
      'num_epochs': num_epochs,
      'weight_decay': 0.0,
  })


def _add_run_settings(config: ml_collections.ConfigDict) -> None:
  """Seed, step counts, checkpoint, evaluation and logging cadence: the same for every recipe."""
  config.seed = 0
  config.num_train_steps = -1  # > 0 overrides optim.num_epochs
  config.checkpoint_every_steps = 1000
  # config.evals every N steps and at the end; the best checkpoint by config.best_metric is
  # kept in workdir/best/. 0: at the end only; -1: never.
  config.eval_every_steps = 5000
  config.keep_checkpoints = 3
  config.log_every_steps = 100
  # Global batches made and copied to the devices ahead of the step, by a background thread
  # (0: each one in the loop's thread, when the step needs it).
  config.prefetch_batches = 2
  # JAX's persistent compilation cache: 'default' is xla/ in the hrnet_jax cache folder
  # ($HRNET_JAX_CACHE or ~/.cache/hrnet_jax), '' leaves it off, or any folder.
  config.compilation_cache_dir = 'default'
  config.init_from = ''  # converted official weights or an ImageNet-pretrained .pth
  # Evaluations by name (hrnet_jax/evaluators.py): COCOeval of the val split, as the official
  # test of the model kind. Their metrics are '<name>/<metric>'; best_metric picks the
  # checkpoint kept in workdir/best/ ('' keeps none).
  config.evals = ml_collections.ConfigDict({'coco': {'type': 'coco_keypoints'}})
  config.best_metric = 'coco/AP'


def bottomup_config(*, width: int, input_size: int, batch_size: int,
                    keypoints: str | kp.KeypointSet = 'coco') -> ml_collections.ConfigDict:
  """The official bottom-up HigherHRNet COCO recipe (``w{width}_{input_size}_adam_lr1e-3.yaml``)."""
  config = ml_collections.ConfigDict()
  config.keypoints = keypoints_config(keypoints)
  config.model = models.higher_hrnet_config(width, num_joints=len(config.keypoints.names))
  config.dataset = ml_collections.ConfigDict({
      'source': 'folder',  # or 'synthetic' (see topdown_config)
      'root': 'data/coco',
      'format': 'coco',  # see topdown_config
      'annotations': '',
      'synthetic': {'num_train': 2000, 'num_val': 200, 'seed': 0, 'max_people': 3},
      'train_split': 'train2017',
      'val_split': 'val2017',
      'input_size': input_size,  # square training crops; the short side at test time
      'sigma': 2.0,  # at both output resolutions
      'max_num_people': 30,  # joint locations kept per image for the tag loss
      'skip_bad_images': False,
  })
  config.augment = ml_collections.ConfigDict({
      'min_scale': 0.75,  # of the short side
      'max_scale': 1.5,
      'max_rotation': 30.0,
      'max_translate': 40.0,  # x the crop side / 200 image pixels, as officially
      'flip': 0.5,  # probability of a horizontal flip; 0 = off
  })
  config.loss = ml_collections.ConfigDict({
      'heatmap_factors': (1.0, 1.0),  # 1/4 and 1/2 outputs
      'push_factor': 1e-3,  # associative embedding, on the 1/4 tags only
      'pull_factor': 1e-3,
      'ae_type': 'exp',  # or 'max'
  })
  config.optim = _adam(lr_steps=(200, 260), num_epochs=300)
  config.batch_size = batch_size
  config.test = ml_collections.ConfigDict({
      'flip_test': True,
      'scale_factors': (1.0,),  # e.g. (2.0, 1.0, 0.5) for the multi-scale test
      'max_num_people': 30,
      'detection_threshold': 0.1,
      'tag_threshold': 1.0,
      'use_detection_val': True,
      'ignore_too_much': False,
      'nms_kernel': 5,
      'adjust': True,
      'refine': True,
  })
  _add_run_settings(config)
  return config


def mpii_config(*, width: int) -> ml_collections.ConfigDict:
  """The official top-down MPII recipe (``mpii/hrnet/w{width}_256x256_adam_lr1e-3.yaml``).

  256x256 crops of the official center and scale, heatmaps 64x64, sigma 2, rotation 30,
  scale 0.25, no half body; Adam 1e-3, x0.1 at epochs 170 and 200 of 210, global batch 128;
  flip test with shift on the ground-truth boxes, scored by PCKh (``gt_valid.mat``).
  """
  config = topdown_config(width=width, image_size=(256, 256), sigma=2, batch_size=128,
                          test_batch_size=128, keypoints='mpii')
  config.dataset.update({'root': 'data/mpii', 'format': 'mpii', 'train_split': 'train',
                         'val_split': 'valid'})
  config.augment.update({'scale_factor': 0.25, 'rotation_factor': 30.0,
                         'half_body_prob': 0.0})
  config.test.update({'use_gt_bbox': True, 'bbox_file': ''})
  config.evals = ml_collections.ConfigDict(
      {'pckh': {'type': 'mpii_pckh', 'headbox_file': 'annot/gt_valid.mat'}})
  config.best_metric = 'pckh/Mean'
  return config


def crowdpose_data(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Points a recipe at CrowdPose as its authors ship it: trainval to train, test to score
  with the crowdpose-api (AP easy / medium / hard by the images' crowd index)."""
  config.dataset.update({'root': 'data/crowdpose', 'annotations': 'json/crowdpose_{split}.json',
                         'train_split': 'trainval', 'val_split': 'test'})
  config.evals = ml_collections.ConfigDict({'crowdpose': {'type': 'crowdpose_keypoints'}})
  config.best_metric = 'crowdpose/AP'
  return config


def posetrack18_config(*, width: int) -> ml_collections.ConfigDict:
  """Top-down PoseTrack18: a COCO model fine-tuned (``init_from``) on the 17 PoseTrack joints,
  as mmpose's recipe; scored by poseval's mAP and by OKS AP on the val detections."""
  config = topdown_config(width=width, image_size=(192, 256), sigma=2, batch_size=512,
                          test_batch_size=128, keypoints='posetrack18')
  config.dataset.update({'root': 'data/posetrack18', 'format': 'posetrack18',
                         'train_split': 'train', 'val_split': 'val'})
  config.optim = _adam(lr_steps=(10, 15), num_epochs=20)
  config.optim.learning_rate = 5e-4
  config.test.bbox_file = 'annotations/posetrack18_val_human_detections.json'
  config.test.image_thre = 0.4  # mmpose's bbox_score_thr
  config.evals = ml_collections.ConfigDict({'posetrack': {'type': 'posetrack_map'},
                                            'coco': {'type': 'coco_keypoints'}})
  config.best_metric = 'posetrack/Total'
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
        raise errors.ConfigError(f'config key {dotted!r} does not exist: {where} has no '
                                 f'{part!r} (known: {", ".join(known)})')
      if i < len(parts) - 1:
        node = node[part]
    node[parts[-1]] = value
  return config


def load_recipe(path: str | os.PathLike) -> ml_collections.ConfigDict:
  """The ``get_config()`` of a recipe file (configs/*.py)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise errors.MissingFileError(f'config file {path} does not exist')
  spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise errors.ConfigError(f'{path} has no get_config(): not a recipe file')
  return module.get_config()


CONFIG_FILE = 'config.json'  # a run's config, written into its workdir by launch/train.py

# Top-down keys added after runs were saved: (section, key, value that behaves as before),
# filled in where a saved config lacks them.
_TOPDOWN_ADDED_KEYS = (('dataset', 'udp', False), ('test', 'blur_kernel', 11))


def _tuples(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def load_saved_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a training run saved in ``workdir/config.json`` (JSON lists as tuples).

  Top-down keys added since it was saved (``_TOPDOWN_ADDED_KEYS``) get the values that behave
  as before."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (recipes load without it)
  path = os.path.join(workdir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    raise errors.MissingFileError(
        f'{path} not found: --workdir must be a launch/train.py run folder (or pass '
        f'--config=FILE, e.g. with --init_from=CONVERTED_WEIGHTS)')
  with tf.io.gfile.GFile(path) as f:
    try:
      saved = json.load(f)
    except json.JSONDecodeError as e:
      raise errors.UserError(f'{path} is not valid JSON: {e}') from e
  saved = _tuples(saved)
  if 'heatmap_size' in saved.get('dataset', {}):  # top-down: keys added since, at defaults
    for section, key, default in _TOPDOWN_ADDED_KEYS:
      saved.setdefault(section, {}).setdefault(key, default)
  if 'keypoints' not in saved:  # saved before keypoint sets were config data: COCO or MPII
    name = {17: 'coco', 16: 'mpii'}.get(saved.get('model', {}).get('num_joints'))
    if name is None:
      raise errors.ConfigError(f'{path} has no keypoints section and not 17 or 16 joints: add '
                               f'"keypoints" (the fields of hrnet_jax.keypoints.KeypointSet)')
    saved['keypoints'] = kp.preset(name).to_dict()
  return ml_collections.ConfigDict(saved)
