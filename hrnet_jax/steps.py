"""The train state and the pure train steps of each model kind: (state, batch, rng) -> update."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

from hrnet_jax import losses

StepFn = Callable[['TrainState', dict, jax.Array], tuple['TrainState', dict]]


class TrainState(train_state.TrainState):
  """Flax TrainState plus the BatchNorm running statistics."""
  batch_stats: Any = None


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       image_shape: tuple[int, ...]) -> TrainState:
  """Initialises variables for images of ``image_shape`` (N, H, W, 3) and the optimizer."""
  variables = model.init(rng, jnp.zeros(image_shape, jnp.float32), train=False)
  return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                           batch_stats=variables['batch_stats'])


def _apply_loss(state: TrainState, loss_fn) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on ``loss_fn(params) -> (loss, (batch_stats, extra metrics))``."""
  (loss, (batch_stats, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  finite = jnp.isfinite(loss)
  for x in jax.tree.leaves((state.params, state.batch_stats)):
    finite &= jnp.all(jnp.isfinite(x))
  return state, {'loss': loss, 'grad_norm': optax.tree.norm(grads), 'finite': finite, **extra}


def _apply_train(state: TrainState, params, images: jax.Array):
  """The model in training mode: its outputs and the updated BatchNorm statistics."""
  outputs, updates = state.apply_fn({'params': params, 'batch_stats': state.batch_stats},
                                    images, train=True, mutable=['batch_stats'])
  return outputs, updates['batch_stats']


TOP_DOWN_BATCH_KEYS = ('image', 'heatmaps', 'target_weight')


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               use_target_weight: bool = True) -> tuple[TrainState, dict[str, jax.Array]]:
  """One top-down optimizer step on ``batch`` ('image', 'heatmaps', 'target_weight'); pure.

  The official JointsMSELoss, with the per-joint target weights unless ``use_target_weight``
  is False. ``rng`` is unused by HRNet (no dropout) and kept so every step shares the signature.
  """
  del rng

  def loss_fn(params):
    heatmaps, batch_stats = _apply_train(state, params, batch['image'])
    weight = batch['target_weight'] if use_target_weight else None
    return losses.joints_mse_loss(heatmaps, batch['heatmaps'], weight), (batch_stats, {})

  return _apply_loss(state, loss_fn)


def bottom_up_loss(outputs: tuple[jax.Array, jax.Array], batch: dict[str, jax.Array], *,
                   heatmap_factors=(1.0, 1.0), push_factor: float = 1e-3,
                   pull_factor: float = 1e-3,
                   ae_type: str = 'exp') -> tuple[jax.Array, dict[str, jax.Array]]:
  """The official MultiLossFactory on HigherHRNet's outputs, averaged over the batch.

  Masked heatmap MSE at 1/4 and 1/2 (x ``heatmap_factors``) plus the associative-embedding
  push and pull losses of the 1/4 tags; returns the total and its parts.
  """
  quarter, half = outputs
  k = half.shape[-1]
  heat_quarter = losses.masked_heatmap_loss(quarter[..., :k], batch['heatmaps_quarter'],
                                            batch['mask_quarter']) * heatmap_factors[0]
  heat_half = losses.masked_heatmap_loss(half, batch['heatmaps_half'],
                                         batch['mask_half']) * heatmap_factors[1]
  push, pull = losses.associative_embedding_loss(quarter[..., k:], batch['tag_locations'],
                                                 ae_type)
  parts = {'heatmap_loss_quarter': heat_quarter.mean(), 'heatmap_loss_half': heat_half.mean(),
           'push_loss': (push * push_factor).mean(), 'pull_loss': (pull * pull_factor).mean()}
  return sum(parts.values()), parts


def bottom_up_train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array,
                         **loss_options) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step of HigherHRNet on a ``bottom_up_pipeline`` batch; pure.

  ``loss_options`` are ``bottom_up_loss``'s factors (``functools.partial`` them in).
  """
  del rng

  def loss_fn(params):
    outputs, batch_stats = _apply_train(state, params, batch['image'])
    loss, parts = bottom_up_loss(outputs, batch, **loss_options)
    return loss, (batch_stats, parts)

  return _apply_loss(state, loss_fn)
