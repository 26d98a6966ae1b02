"""Helpers shared by the benchmark scripts (no TensorFlow: they also run on GPU machines)."""

from __future__ import annotations

import functools
import resource
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from hrnet_jax import steps


def peak_memory(compiled) -> str:
  """Device peak memory, or on a CPU XLA's plan and the process max RSS."""
  stats = jax.local_devices()[0].memory_stats() or {}
  analysis = compiled.memory_analysis()
  planned = (analysis.temp_size_in_bytes + analysis.argument_size_in_bytes +
             analysis.output_size_in_bytes) / 2**30
  if 'peak_bytes_in_use' in stats:
    return (f'{stats["peak_bytes_in_use"] / 2**30:.2f} GiB device peak so far, '
            f'{planned:.2f} GiB XLA-planned')
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  return f'{planned:.2f} GiB XLA-planned (args + temps + outputs), {rss:.2f} GiB process max RSS'


def flops(compiled) -> float:
  """XLA's cost-analysis FLOPs of one call of a compiled function (per device under SPMD)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', float('nan')))


def conv_macs_per_image(model, variables, images) -> float:
  """Multiply-adds of every convolution for one image (what the official 7.1 G counts)."""
  total = 0

  def count(next_fun, args, kwargs, context):
    nonlocal total
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name != '__call__':
      return out
    if isinstance(module, nn.ConvTranspose):  # each input pixel x channels x window
      total += int(np.prod(args[0].shape[1:])) * out.shape[-1] * int(np.prod(module.kernel_size))
    elif isinstance(module, nn.Conv):  # each output pixel x channels x window
      total += int(np.prod(out.shape[1:])) * args[0].shape[-1] * int(np.prod(module.kernel_size))
    return out

  with nn.intercept_methods(count):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images[:1])
  return float(total)


def time_train_step(compiled, state, data, key, steps: int) -> tuple[Any, float]:
  """One warm step, then ``steps`` timed ones of a compiled, donating train step: (state, s/step)."""
  state, metrics = compiled(state, data, key)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, data, key)
  jax.block_until_ready(metrics)
  return state, (time.perf_counter() - start) / steps


def is_out_of_memory(error: Exception) -> bool:
  """Whether a JAX runtime error is an allocation failure."""
  return 'RESOURCE_EXHAUSTED' in str(error) or 'out of memory' in str(error).lower()


def synthetic_training(config: ml_collections.ConfigDict, model, batch: int,
                       seed: int = 0) -> tuple[Callable[..., Any], dict[str, np.ndarray]]:
  """The recipe's pure train step and a random batch of ``batch`` with its keys and shapes.

  The targets follow the model's outputs: one heatmap array is a top-down model (official
  JointsMSELoss with target weights), HigherHRNet's pair of maps a bottom-up one (heatmap
  losses at 1/4 and 1/2 with masks, associative-embedding loss over 30 people).
  """
  height, width = config.dataset.image_size[::-1] if 'image_size' in config.dataset else (
      (config.dataset.input_size,) * 2)
  rng = np.random.default_rng(seed)
  image = rng.normal(size=(batch, height, width, 3)).astype(np.float32)
  outputs = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, train=False)[0],
                           jax.ShapeDtypeStruct(image.shape, np.float32))
  if not isinstance(outputs, (tuple, list)):
    k = outputs.shape[-1]
    return steps.train_step, {
        'image': image,
        'heatmaps': rng.uniform(size=outputs.shape).astype(np.float32),
        'target_weight': np.ones((batch, k, 1), np.float32)}
  quarter, half = outputs
  k = half.shape[-1]
  hq, wq = quarter.shape[1:3]
  people = 30
  index = rng.integers(0, k * hq * wq, size=(batch, people, k))
  locations = np.stack([index, rng.integers(0, 2, size=index.shape)], -1).astype(np.int32)
  loss = config.loss
  step = functools.partial(steps.bottom_up_train_step,
                           heatmap_factors=tuple(loss.heatmap_factors),
                           push_factor=loss.push_factor, pull_factor=loss.pull_factor,
                           ae_type=loss.ae_type)
  return step, {
      'image': image,
      'heatmaps_quarter': rng.uniform(size=(batch, hq, wq, k)).astype(np.float32),
      'heatmaps_half': rng.uniform(size=half.shape[:3] + (k,)).astype(np.float32),
      'mask_quarter': np.ones((batch, hq, wq), np.float32),
      'mask_half': np.ones(half.shape[:3], np.float32),
      'tag_locations': locations}



def define_compile_only_flag():
  """--compile_only: compile (filling the persistent compilation cache) and exit."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  return flags.DEFINE_bool('compile_only', False, 'Compile, print the time and exit (with '
                           'JAX_COMPILATION_CACHE_DIR set, a later run loads the program).')
