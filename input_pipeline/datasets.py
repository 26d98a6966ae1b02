"""Where a config's ``dataset`` section points: a COCO-format folder, made once if synthetic.

``dataset.source`` names the reader: 'folder' (COCO-format folder at ``dataset.root``),
'tfds' (shards in ``dataset.tfds_data_dir``; ``input_pipeline/tfds_source.py``) or
'synthetic' (the synthetic set of ``dataset.synthetic``, written once into a cache folder,
then read as a folder).
"""

from __future__ import annotations

import os
import tempfile

import ml_collections
import tensorflow as tf

from hrnet_jax import errors
from input_pipeline import coco, synthetic

SOURCES = ('folder', 'tfds', 'synthetic')


def cache_dir() -> str:
  """``$HRNET_JAX_CACHE`` or ``~/.cache/hrnet_jax``: where generated datasets live."""
  return os.environ.get('HRNET_JAX_CACHE', os.path.join(os.path.expanduser('~'), '.cache',
                                                         'hrnet_jax'))


def dataset_root(d: ml_collections.ConfigDict) -> str:
  """The COCO-format folder of a ``config.dataset`` of source folder or synthetic (made once)."""
  if d.source not in SOURCES:
    raise errors.ConfigError(f'config.dataset.source is {d.source!r}; expected one of {SOURCES}')
  if d.source != 'synthetic':
    return d.root
  s = d.synthetic
  max_people = s.max_people
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


def read_split(config: ml_collections.ConfigDict, split: str) -> coco.Split:
  """The split ``split`` of a config's dataset (folder or synthetic), read as its format says.

  A missing image is an error naming it, or with ``dataset.skip_bad_images`` left out and
  reported here, before any step runs.
  """
  d = config.dataset
  data = coco.read_split(dataset_root(d), split, annotations=d.get('annotations', ''),
                         format=d.get('format', 'coco'), num_joints=config.model.num_joints,
                         skip_missing=d.skip_bad_images)
  if data.skipped:
    print(f'{data.source}: left out {len(data.skipped)} image(s) not found (skip_bad_images), '
          f'e.g. {data.skipped[0]}', flush=True)
  return data
