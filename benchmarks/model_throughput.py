r"""Forward and train-step throughput of a pose HRNet on the current JAX backend.

python benchmarks/model_throughput.py --config=configs/coco_w32.py --batch_size=32

Prints images/s (forward in eval mode, and a full Adam train step), compile seconds, peak
memory, and XLA's cost-analysis FLOPs per image beside the official 7.1 GFLOPs (counted as
multiply-adds) of W32 256x192. Inputs are random; weights are freshly initialised.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags, logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_utils  # noqa: E402

from hrnet_jax import models, steps  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/coco_w32.py', 'Recipe config.',
                                          lock_config=True)
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Images per step.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps after the warm-up step.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')

OFFICIAL_GMACS = {(32, (192, 256)): 7.1, (32, (288, 384)): 16.0, (48, (192, 256)): 14.6,
                  (48, (288, 384)): 32.9}


def _time(fn, *args, steps: int) -> tuple[float, float]:
  """Returns (first-run seconds, mean seconds per step afterwards)."""
  start = time.perf_counter()
  out = fn(*args)
  jax.block_until_ready(out)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps):
    out = fn(*args)
  jax.block_until_ready(out)
  return first, (time.perf_counter() - start) / steps


def conv_macs_per_image(model, variables, images: jnp.ndarray) -> float:
  """Multiply-adds of every convolution for one image (what the official 7.1 G counts)."""
  total = 0

  def count(next_fun, args, kwargs, context):
    nonlocal total
    out = next_fun(*args, **kwargs)
    module = context.module
    if isinstance(module, nn.Conv) and context.method_name == '__call__':
      cin = args[0].shape[-1]
      kernel = int(np.prod(module.kernel_size))
      total += int(np.prod(out.shape[1:])) * cin * kernel  # out pixels x channels x window
    return out

  with nn.intercept_methods(count):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images[:1])
  return float(total)


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  config.model.dtype = _DTYPE.value
  model = models.create_model(config.model)
  width, height = config.dataset.image_size
  hw, hh = config.dataset.heatmap_size
  batch = _BATCH.value
  k = config.model.num_joints
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(batch, height, width, 3)), jnp.float32)
  data = {'image': images,
          'heatmaps': jnp.asarray(rng.uniform(size=(batch, hh, hw, k)), jnp.float32),
          'target_weight': jnp.ones((batch, k, 1), jnp.float32)}
  print(f'backend {jax.default_backend()} ({jax.devices()[0].device_kind}), '
        f'{jax.device_count()} device(s); HRNet-W{config.model.width} {height}x{width}, '
        f'batch {batch}, {_DTYPE.value}')

  state = steps.create_train_state(model, optax.adam(1e-3), jax.random.key(0),
                                       (1, height, width, 3))
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  num_params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))

  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  start = time.perf_counter()
  compiled_fwd = forward.lower(variables, images).compile()
  compile_fwd_s = time.perf_counter() - start
  cost = compiled_fwd.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  gflops = float(cost.get('flops', float('nan'))) / batch / 1e9
  _, per_step = _time(compiled_fwd, variables, images, steps=_STEPS.value)
  print(f'forward:    {batch / per_step:8.1f} images/s  ({per_step * 1e3:.1f} ms/step, '
        f'compile {compile_fwd_s:.1f} s; {bench_utils.peak_memory(compiled_fwd)})')

  step = jax.jit(steps.train_step, donate_argnums=(0,))
  key = jax.random.key(1)
  start = time.perf_counter()
  compiled_step = step.lower(state, data, key).compile()
  compile_s = time.perf_counter() - start
  state, _ = compiled_step(state, data, key)
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(_STEPS.value):
    state, metrics = compiled_step(state, data, key)
  jax.block_until_ready(metrics)
  per_step = (time.perf_counter() - start) / _STEPS.value
  print(f'train step: {batch / per_step:8.1f} images/s  ({per_step * 1e3:.1f} ms/step, '
        f'compile {compile_s:.1f} s; {bench_utils.peak_memory(compiled_step)})')

  official = OFFICIAL_GMACS.get((config.model.width, (width, height)))
  print(f'parameters: {num_params:,}')
  print(f'XLA cost analysis: {gflops:.2f} GFLOPs per image forward = {gflops / 2:.2f} G '
        f'multiply-adds, all ops (BN, ReLU and sums included)')
  macs = conv_macs_per_image(model, variables, images) / 1e9
  print(f'convolutions alone: {macs:.2f} G multiply-adds per image' +
        (f' (official: {official} GFLOPs, counted as convolution multiply-adds)'
         if official else ''))


if __name__ == '__main__':
  app.run(main)
