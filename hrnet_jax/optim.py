"""The learning-rate schedule and the optimizer of a recipe (no TensorFlow, no I/O)."""

from __future__ import annotations

import ml_collections
import optax

from hrnet_jax import errors


def create_learning_rate_fn(config: ml_collections.ConfigDict,
                            steps_per_epoch: int) -> optax.Schedule:
  """The official MultiStepLR (x ``lr_factor`` at each epoch of ``lr_steps``), per step."""
  o = config.optim
  return optax.piecewise_constant_schedule(
      o.learning_rate, {int(e * steps_per_epoch): o.lr_factor for e in o.lr_steps})


def create_optimizer(config: ml_collections.ConfigDict,
                     learning_rate: optax.Schedule) -> optax.GradientTransformation:
  """Adam as the official recipe (AdamW when weight_decay > 0), or SGD with momentum 0.9."""
  o = config.optim
  if o.name == 'adam':
    if o.weight_decay:
      return optax.adamw(learning_rate, weight_decay=o.weight_decay)
    return optax.adam(learning_rate)
  if o.name == 'sgd':
    return optax.chain(optax.add_decayed_weights(o.weight_decay),
                       optax.sgd(learning_rate, momentum=0.9))
  raise errors.ConfigError(f"config.optim.name is {o.name!r}; expected 'adam' or 'sgd'")
