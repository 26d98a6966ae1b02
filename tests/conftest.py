"""Shared test helpers: fixture paths, the small official architecture, synthetic data."""

import json
import os
import tempfile

import pytest

from hrnet_jax import models

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
OFFICIAL = os.path.join(FIXTURES, 'official_hrnet')
REFERENCE = os.path.join(FIXTURES, 'reference_hrnet')
OFFICIAL_HIGHER = os.path.join(FIXTURES, 'official_higher_hrnet')
REFERENCE_HIGHER = os.path.join(FIXTURES, 'reference_higher_hrnet')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Compiled programs and generated data sets of the tests (subprocesses included) go to a
# folder of this session, not the user's ~/.cache/hrnet_jax.
os.environ.setdefault('HRNET_JAX_CACHE', tempfile.mkdtemp(prefix='hrnet_jax_tests_'))


# The test files that take longest (minutes on 2 cores), longest first: collected ahead of the
# rest, so that pytest-xdist's two workers (--dist loadfile: a file at a time, in collection
# order) start them first and finish together.
LONGEST_FILES = ('test_train.py', 'test_real_datasets.py', 'test_train_loop.py', 'test_demo.py',
                 'test_train_step.py', 'test_config_keys.py', 'test_zoo.py',
                 'test_bottom_up_training.py', 'test_configs_and_cli.py', 'test_eval_devices.py',
                 'test_export.py', 'test_video.py')


def pytest_collection_modifyitems(config, items):
  """Runs ``LONGEST_FILES`` first, in that order; every other file after, as collected."""
  del config
  rank = {name: i for i, name in enumerate(LONGEST_FILES)}
  items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))


def random_variables(model_config, seed=0):
  """Random variables of a model (He-scaled kernels, BN near identity) without compiling its
  init, which is slow on the CPU."""
  import jax
  import numpy as np
  from hrnet_jax import weights
  rng = np.random.default_rng(seed)

  def draw(path, s):
    leaf = path[-1].key
    if leaf == 'kernel':
      return rng.normal(0, (2.0 / np.prod(s.shape[:-1]))**0.5, s.shape).astype(np.float32)
    if leaf in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
    return rng.normal(0, 0.1, s.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, weights.variable_shapes(model_config))


def assert_matches_manifest(manifest_path, model_config):
  """Every official key of a manifest maps to exactly one variable of the official shape, and
  back; the BN step counters are the only keys without one. Returns (ours, official) counts."""
  import jax
  import numpy as np
  from hrnet_jax import weights
  with open(manifest_path) as f:
    manifest = json.load(f)
  shapes = weights.variable_shapes(model_config)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes['params']))
  official = {k: tuple(s) for k, s in manifest['keys'] if not k.endswith('num_batches_tracked')}
  mapping = weights.key_map(shapes)
  assert set(mapping) == set(official)
  assert len({(c, p) for c, p, _ in mapping.values()}) == len(mapping)
  for key, (_, _, shape) in mapping.items():
    assert weights._to_torch_layout(np.empty(shape)).shape == official[key], key
  counters = [k for k, _ in manifest['keys'] if k.endswith('num_batches_tracked')]
  assert {k.rsplit('.', 1)[0] for k in counters} == weights._bn_prefixes(official)
  return num_params, manifest['num_params']


def small_config():
  """The model config of the official small fixture model (small_hrnet_config.json)."""
  with open(os.path.join(OFFICIAL, 'small_hrnet_config.json')) as f:
    c = json.load(f)
  return models.pose_hrnet_config(c['width'], c['blocks'], tuple(c['modules']), c['joints'],
                                  c['final_kernel'])


@pytest.fixture
def small_model_config():
  return small_config()


@pytest.fixture(scope='session')
def synthetic_folder(tmp_path_factory):
  """A small synthetic COCO-format dataset: 24 train and 6 val images (seed 1)."""
  from input_pipeline import synthetic
  root = str(tmp_path_factory.mktemp('synthetic'))
  synthetic.write_dataset(root, num_train=24, num_val=6, seed=1)
  return root
