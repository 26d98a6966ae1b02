"""What a config's ``dataset`` section names, as training batches: folder, TFDS or synthetic.

``dataset.source`` picks the reader: 'folder' (COCO-format folder at ``dataset.root``,
index-based pipeline), 'tfds' (shards in ``dataset.tfds_data_dir``, streaming) or 'synthetic'
(the synthetic set of ``dataset.synthetic``, written once into a cache folder, then read as a
folder).
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterator

import ml_collections
import numpy as np
import tensorflow as tf

from hrnet_jax import models
from input_pipeline import bottom_up_pipeline, coco, pipeline, synthetic, tfds_source

SOURCES = ('folder', 'tfds', 'synthetic')


def cache_dir() -> str:
  """``$HRNET_JAX_CACHE`` or ``~/.cache/hrnet_jax``: where generated datasets live."""
  return os.environ.get('HRNET_JAX_CACHE', os.path.join(os.path.expanduser('~'), '.cache',
                                                         'hrnet_jax'))


def dataset_root(config: ml_collections.ConfigDict) -> str:
  """The COCO-format folder of a folder or synthetic source (made once if synthetic)."""
  d = config.dataset
  if d.source not in SOURCES:
    raise ValueError(f'config.dataset.source is {d.source!r}; expected one of {SOURCES}')
  if d.source != 'synthetic':
    return d.root
  s = d.synthetic
  max_people = s.get('max_people', 3)
  root = d.root or os.path.join(
      cache_dir(), f'synthetic_{s.num_train}_{s.num_val}_seed{s.seed}'
      f'{"" if max_people == 3 else f"_people{max_people}"}')
  if not tf.io.gfile.exists(coco.annotation_path(root, 'val')):
    # Written next to root, then renamed: a crash never leaves a half-written dataset.
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.synthetic_', dir=parent)
    synthetic.write_dataset(staging, s.num_train, s.num_val, seed=s.seed, max_people=max_people)
    try:
      os.rename(staging, root)
    except OSError:  # another process won the race: use its copy
      if not tf.io.gfile.exists(coco.annotation_path(root, 'val')):
        raise
  return root


class TrainingData:
  """The training examples of a config's source, read once: their count and their batches.

  Top-down examples are person instances; bottom-up (HigherHRNet) examples are whole images.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    d = config.dataset
    self.bottom_up = models.is_bottom_up(config.model)
    if self.bottom_up:
      if d.source == 'tfds':
        raise ValueError("bottom-up training reads COCO-format folders: config.dataset.source "
                         "'tfds' is top-down only; use 'folder' or 'synthetic'")
      self.spec = bottom_up_pipeline.BottomUpSpec.from_config(config)
      self.instances = coco.load_people_images(dataset_root(config), d.train_split,
                                               num_joints=config.model.num_joints)
      self.num_instances = len(self.instances)
      return
    self.spec = pipeline.SampleSpec.from_config(config)
    if d.source == 'tfds':
      builder = tfds_source.load_builder(d.tfds_data_dir)
      tfds_source._check_split(builder, d.train_split)
      self.instances = None
      self.num_instances = int(tfds_source.people_per_example(builder)[d.train_split].sum())
    else:
      self.instances = coco.load_ground_truth(dataset_root(config), d.train_split,
                                              aspect_ratio=self.spec.aspect_ratio,
                                              num_joints=config.model.num_joints,
                                              padding=d.box_padding)
      self.num_instances = len(self.instances)

  @property
  def what(self) -> str:
    """What one example is, for messages."""
    return 'images' if self.bottom_up else 'people'

  def batches(self, *, start_step: int, process_index: int,
              process_count: int) -> Iterator[dict[str, np.ndarray]]:
    """numpy batches of this process's share of every global batch, from ``start_step`` on."""
    c = self.config
    if self.instances is None:
      ds = tfds_source.train_dataset(
          c.dataset.tfds_data_dir, c.dataset.train_split, self.spec, c.batch_size, seed=c.seed,
          start_step=start_step, process_index=process_index, process_count=process_count)
      return ds.as_numpy_iterator()
    return pipeline.TrainIterator(
        self.instances, self.spec, c.batch_size, seed=c.seed, start_step=start_step,
        process_index=process_index, process_count=process_count,
        skip_bad_images=c.dataset.skip_bad_images,
        make_dataset=bottom_up_pipeline.train_dataset if self.bottom_up else None)
