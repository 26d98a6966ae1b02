"""Bottom-up losses against a transcription of the official HeatmapLoss and AELoss."""

import numpy as np
import pytest

import official_reference as official
from hrnet_jax import losses


def random_case(rng, n=3, h=8, w=12, k=17, max_people=6):
  tags = rng.normal(0, 1.5, (n, h, w, k)).astype(np.float32)
  locations = np.zeros((n, max_people, k, 2), np.int32)
  for i, people in enumerate([0, 1, max_people][:n]):  # no person, one, a crowd
    for p in range(people):
      for j in range(k):
        if rng.random() < 0.7:
          y, x = rng.integers(0, h), rng.integers(0, w)
          locations[i, p, j] = (j * h * w + y * w + x, 1)
  return tags, locations


@pytest.mark.parametrize('loss_type', ['exp', 'max'])
def test_associative_embedding_loss_is_the_official(loss_type):
  """float32 against the official float64 transcription, rtol 1e-5."""
  rng = np.random.default_rng(0)
  tags, locations = random_case(rng)
  push, pull = losses.associative_embedding_loss(tags, locations, loss_type)
  for i in range(len(tags)):
    flat = tags[i].transpose(2, 0, 1).reshape(-1, 1).astype(np.float64)  # view(-1, 1) of NCHW
    expected_push, expected_pull = official.ae_single_tag_loss(flat, locations[i], loss_type)
    np.testing.assert_allclose(push[i], expected_push, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(pull[i], expected_pull, rtol=1e-5, atol=1e-7)
  assert push[2] > 0 and pull[2] > 0 and push[0] == pull[0] == push[1] == 0
  with pytest.raises(ValueError, match='ae loss type'):
    losses.associative_embedding_loss(tags, locations, 'l2')


def test_masked_heatmap_loss_is_the_official():
  rng = np.random.default_rng(1)
  pred, gt = rng.random((2, 2, 16, 16, 17)).astype(np.float32)
  mask = (rng.random((2, 16, 16)) > 0.3).astype(np.float32)
  expected = official.bottom_up_heatmap_loss(pred.transpose(0, 3, 1, 2).astype(np.float64),
                                             gt.transpose(0, 3, 1, 2), mask)
  np.testing.assert_allclose(losses.masked_heatmap_loss(pred, gt, mask), expected, rtol=1e-5)
