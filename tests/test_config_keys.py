"""Every key of every recipe in configs/ is read by the code, or it is gone.

Reads are recorded by wrapping ``ConfigDict.__getitem__`` (attribute access, ``get``,
``items`` all go through it) while tiny runs of both model kinds go through what the keys
control: ``train_and_evaluate`` (training data, train step, optimizer and schedule,
checkpoints, evaluators, best checkpoint), evaluation with detection boxes, the TFDS source and
the predictor. Writing a config to JSON is not a read. A read is identified by the key and
the set of keys of its section, so copies of a config count too.
"""

import contextlib
import glob
import json
import os

import ml_collections
import numpy as np
import pytest

from conftest import REPO
from hrnet_jax import config_lib, errors, evaluators, sharding, tasks, train_lib
from input_pipeline import coco
import test_real_datasets as real_datasets

RECIPES = sorted(glob.glob(os.path.join(REPO, 'configs', '*.py')))


@contextlib.contextmanager
def recorded_reads():
  """Collects (frozenset of a section's keys, key) for every ConfigDict read inside."""
  reads = set()
  cls = ml_collections.ConfigDict
  getitem, to_dict = cls.__getitem__, cls.to_dict
  paused = []

  def recording_getitem(self, key):
    if not paused and isinstance(key, str) and '.' not in key:
      reads.add((frozenset(self._fields), key))
    return getitem(self, key)

  def silent_to_dict(self, *args, **kwargs):  # serialising (config.json) reads every key
    paused.append(True)
    try:
      return to_dict(self, *args, **kwargs)
    finally:
      paused.pop()

  cls.__getitem__, cls.to_dict = recording_getitem, silent_to_dict
  try:
    yield reads
  finally:
    cls.__getitem__, cls.to_dict = getitem, to_dict


def leaves(tree: dict, prefix=''):
  """(dotted path, frozenset of its section's keys, key) of every leaf of a nested dict."""
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', frozenset(tree), key


def tiny(path, root, **changes):
  """A recipe with a tiny model, data and schedule (values change, keys do not)."""
  config = config_lib.override(config_lib.load_recipe(path), {
      'dataset.source': 'synthetic', 'dataset.root': root, 'dataset.train_split': 'train',
      'dataset.val_split': 'val', 'model.width': 4, 'model.num_blocks': 1,
      'model.num_modules': (1, 1, 1), 'model.stem_blocks': 1, 'num_train_steps': -1,
      'optim.num_epochs': 1, 'optim.lr_steps': (1, 1), 'eval_every_steps': 0,
      'log_every_steps': 1, 'checkpoint_every_steps': 1000, 'test.flip_test': True,
      'augment.flip': 0.5, **changes})
  return config


def write_detections(root, path):
  """The val set's ground-truth boxes as a COCO detection results file."""
  annotations = coco.read_json(coco.annotation_path(root, 'val'))['annotations']
  with open(path, 'w') as f:
    json.dump([{'image_id': a['image_id'], 'category_id': 1, 'bbox': a['bbox'], 'score': 0.9}
               for a in annotations], f)


@pytest.fixture(scope='module')
def reads(tmp_path_factory):
  """Every config read made by tiny runs of both model kinds through every keyed path."""
  work = tmp_path_factory.mktemp('config_keys')
  top_root, bottom_root = str(work / 'top_data'), str(work / 'bottom_data')
  top_down = tiny(os.path.join(REPO, 'configs', 'demo.py'), top_root,
                  **{'dataset.image_size': (64, 64), 'dataset.heatmap_size': (16, 16),
                     'dataset.synthetic.num_train': 16, 'dataset.synthetic.num_val': 2,
                     'batch_size': 8, 'test.batch_size': 8})
  bottom_up = tiny(os.path.join(REPO, 'configs', 'demo_bottom_up.py'), bottom_root,
                   **{'dataset.input_size': 64, 'dataset.synthetic.num_train': 8,
                      'dataset.synthetic.num_val': 2, 'batch_size': 4,
                      'model.deconv_blocks': 1, 'test.detection_threshold': 0.0})
  with recorded_reads() as reads:
    state = train_lib.train_and_evaluate(top_down, str(work / 'top_run'))
    train_lib.train_and_evaluate(bottom_up, str(work / 'bottom_run'))
    # Detection boxes instead of the ground truth, and the DARK decoder.
    detections = str(work / 'detections.json')
    write_detections(top_root, detections)
    with_detections = config_lib.override(top_down, {
        'test.use_gt_bbox': False, 'test.bbox_file': detections, 'test.decoder': 'dark'})
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    tasks.get_task(with_detections).val_source(sharding.data_mesh()).predict(variables)
    # The TFDS source names its folder (none here: the read is what counts).
    with_tfds = config_lib.override(top_down, {'dataset.source': 'tfds',
                                               'dataset.tfds_data_dir': str(work / 'none')})
    with pytest.raises(Exception):
      tasks.get_task(with_tfds).training_data()
    # The predictor of the demo and the Python API.
    image = np.zeros((48, 40, 3), np.uint8)
    tasks.get_task(top_down).predictor(variables)([image])
    # The other datasets' evaluators, built on their real samples.
    for name in ('mpii', 'crowdpose', 'posetrack18'):
      config = real_datasets.sample_config(name)
      if name == 'mpii':
        config.evals.pckh.headbox_file = str(work / 'gt_valid.mat')
        real_datasets.write_gt_valid_mat(config.evals.pckh.headbox_file)
      evaluators.from_config(config, tasks.get_task(config), sharding.data_mesh())
  return reads


@pytest.mark.parametrize('recipe', RECIPES, ids=os.path.basename)
def test_every_recipe_key_is_read(reads, recipe):
  config = config_lib.load_recipe(recipe)
  unread = [path for path, section, key in leaves(config.to_dict()) if (section, key) not in reads]
  assert not unread, f'{os.path.basename(recipe)}: no code reads {unread}'


def test_a_removed_key_is_an_error_not_ignored():
  config = config_lib.load_recipe(os.path.join(REPO, 'configs', 'coco_w32.py'))
  for removed in ('test.bbox_thre', 'test.nms_thre', 'dataset.name'):
    with pytest.raises(errors.ConfigError, match='does not exist'):
      config_lib.override(config, {removed: 1.0})


def test_the_recorder_sees_an_unread_key(tmp_path):
  """The check itself: a key that nothing reads is reported."""
  config = ml_collections.ConfigDict({'a': 1, 'section': {'b': 2, 'c': 3}})
  with recorded_reads() as reads:
    _ = config.a + config.section.b
    config.to_dict()
  unread = [p for p, section, key in leaves(config.to_dict()) if (section, key) not in reads]
  assert unread == ['section.c']
