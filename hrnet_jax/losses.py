"""Training losses of the official code."""

from __future__ import annotations

import jax.numpy as jnp


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
