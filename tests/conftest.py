"""Shared test helpers: fixture paths and the small official architecture."""

import json
import os

import pytest

from hrnet_jax import models

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
OFFICIAL = os.path.join(FIXTURES, 'official_hrnet')
REFERENCE = os.path.join(FIXTURES, 'reference_hrnet')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config():
  """The model config of the official small fixture model (small_hrnet_config.json)."""
  with open(os.path.join(OFFICIAL, 'small_hrnet_config.json')) as f:
    c = json.load(f)
  return models.pose_hrnet_config(c['width'], c['blocks'], tuple(c['modules']), c['joints'],
                                  c['final_kernel'])


@pytest.fixture
def small_model_config():
  return small_config()
