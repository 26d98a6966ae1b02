"""Training losses of the official code."""

from __future__ import annotations

import jax.numpy as jnp

from hrnet_jax import errors


def joints_mse_loss(heatmaps: jnp.ndarray, targets: jnp.ndarray,
                    target_weight: jnp.ndarray | None = None) -> jnp.ndarray:
  """The official JointsMSELoss: mean over joints of 0.5 x MSE, each joint x its weight.

  heatmaps, targets: (N, H, W, K); target_weight: (N, K) or (N, K, 1), or None.
  """
  heatmaps = heatmaps.astype(jnp.float32)
  targets = targets.astype(jnp.float32)
  if target_weight is not None:
    weight = target_weight.reshape(target_weight.shape[0], 1, 1, -1).astype(jnp.float32)
    heatmaps, targets = heatmaps * weight, targets * weight
  # Per joint: MSE over batch and pixels (torch's MSELoss(reduction='mean')), then x 0.5.
  per_joint = 0.5 * jnp.mean(jnp.square(heatmaps - targets), axis=(0, 1, 2))
  return jnp.mean(per_joint)


def masked_heatmap_loss(heatmaps: jnp.ndarray, targets: jnp.ndarray,
                        mask: jnp.ndarray) -> jnp.ndarray:
  """The official bottom-up HeatmapLoss: per image, mean over pixels and joints of the
  squared error where ``mask`` (N, H, W) is 1; (N,).

  heatmaps, targets: (N, H, W, K).
  """
  error = jnp.square(heatmaps.astype(jnp.float32) - targets.astype(jnp.float32))
  return jnp.mean(error * mask[..., None].astype(jnp.float32), axis=(1, 2, 3))


def associative_embedding_loss(tags: jnp.ndarray, locations: jnp.ndarray,
                               loss_type: str = 'exp') -> tuple[jnp.ndarray, jnp.ndarray]:
  """The official AELoss (one tag dimension per joint): push and pull per image, (N,) each.

  tags: (N, H, W, K). locations: (N, P, K, 2) int, the official joint list: flat index
  k*H*W + y*W + x and 1 for a labelled joint (see ``input_pipeline.bottom_up_targets``).
  Pull: mean over people of the variance of their joints' tags. Push: over pairs of people,
  exp(-(difference of mean tags)^2) ('exp') or max(0, 1 - |difference|) ('max'), halved and
  averaged over ordered pairs; 0 for fewer than two people.
  """
  if loss_type not in ('exp', 'max'):
    raise errors.UserError(f"ae loss type must be 'exp' or 'max', got {loss_type!r}")
  n = tags.shape[0]
  flat = jnp.transpose(tags.astype(jnp.float32), (0, 3, 1, 2)).reshape(n, -1)  # NCHW order
  index, valid = locations[..., 0], locations[..., 1].astype(jnp.float32)
  picked = jnp.take_along_axis(flat, index.reshape(n, -1), axis=1).reshape(index.shape)
  count = valid.sum(axis=2)  # (N, P)
  present = (count > 0).astype(jnp.float32)
  mean = (picked * valid).sum(axis=2) / jnp.maximum(count, 1.0)
  variance = (jnp.square(picked - mean[..., None]) * valid).sum(axis=2) / jnp.maximum(count, 1.0)
  num_tags = present.sum(axis=1)
  pull = (variance * present).sum(axis=1) / jnp.maximum(num_tags, 1.0)
  diff = mean[:, :, None] - mean[:, None, :]
  pairs = present[:, :, None] * present[:, None, :]
  if loss_type == 'exp':
    similarity = jnp.exp(-jnp.square(diff))
  else:
    similarity = jnp.maximum(1.0 - jnp.abs(diff), 0.0)
  push = ((similarity * pairs).sum(axis=(1, 2)) - num_tags) / jnp.maximum(
      (num_tags - 1.0) * num_tags, 1.0) * 0.5
  push = jnp.where(num_tags >= 2, push, 0.0)
  return push, pull
