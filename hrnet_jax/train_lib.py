"""Functional training pieces: the train state and a pure, jit-able train step."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from hrnet_jax import losses


class TrainState(train_state.TrainState):
  """Flax TrainState plus the BatchNorm running statistics."""
  batch_stats: Any = None


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       image_shape: tuple[int, ...]) -> TrainState:
  """Initialises variables for images of ``image_shape`` (N, H, W, 3) and the optimizer."""
  variables = model.init(rng, jnp.zeros(image_shape, jnp.float32), train=False)
  return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                           batch_stats=variables['batch_stats'])


def train_step(state: TrainState, batch: dict[str, jax.Array],
               rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on ``batch`` ('image', 'heatmaps', 'target_weight'); pure.

  ``rng`` is unused by HRNet (no dropout) and kept so every model shares the signature.
  """
  del rng

  def loss_fn(params):
    heatmaps, updates = state.apply_fn({'params': params, 'batch_stats': state.batch_stats},
                                       batch['image'], train=True, mutable=['batch_stats'])
    loss = losses.joints_mse_loss(heatmaps, batch['heatmaps'], batch.get('target_weight'))
    return loss, updates['batch_stats']

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return state, {'loss': loss, 'grad_norm': optax.tree.norm(grads)}
