"""Shared test helpers: fixture paths, the small official architecture, synthetic data."""

import json
import os

import pytest

from hrnet_jax import models

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
OFFICIAL = os.path.join(FIXTURES, 'official_hrnet')
REFERENCE = os.path.join(FIXTURES, 'reference_hrnet')
OFFICIAL_HIGHER = os.path.join(FIXTURES, 'official_higher_hrnet')
REFERENCE_HIGHER = os.path.join(FIXTURES, 'reference_higher_hrnet')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
