r"""Training throughput of the data-parallel train step, as launch/train.py runs it.

python benchmarks/train_throughput.py --config=configs/coco_w32.py --per_device_batch=32 \
    [--peak_tflops=989] [--steps=10] [--dtype=bfloat16]

Runs the jitted, donated update over the data mesh of all devices with random inputs of the
recipe's shapes (the input pipeline has its own benchmark). Prints instances/s, step time,
compile time, peak memory, and the achieved fraction of ``--peak_tflops`` (dense FLOP/s of
one device, e.g. 989 for an H100 SXM in bfloat16) from XLA's FLOP count of the step.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags, logging
import jax
import numpy as np
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_utils  # noqa: E402

from hrnet_jax import models, optim, sharding, steps  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/coco_w32.py', 'Recipe config.',
                                          lock_config=True)
_PER_DEVICE = flags.DEFINE_integer('per_device_batch', 32, 'Instances per device per step.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps after the compile and one warm step.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
_PEAK = flags.DEFINE_float('peak_tflops', None, 'Peak dense TFLOP/s of one device.')


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  config.model.dtype = _DTYPE.value
  mesh = sharding.data_mesh()
  batch = _PER_DEVICE.value * jax.device_count()
  width, height = config.dataset.image_size
  hw, hh = config.dataset.heatmap_size
  k = config.model.num_joints
  model = models.create_model(config.model)
  tx = optim.create_optimizer(config, optim.create_learning_rate_fn(config, 1000))
  rep = sharding.replicated(mesh)
  state = jax.jit(lambda rng: steps.create_train_state(model, tx, rng, (1, height, width, 3)),
                  out_shardings=rep)(jax.random.key(0))
  rng = np.random.default_rng(0)
  local = batch // jax.process_count()
  data = sharding.global_batch({
      'image': rng.normal(size=(local, height, width, 3)).astype(np.float32),
      'heatmaps': rng.uniform(size=(local, hh, hw, k)).astype(np.float32),
      'target_weight': np.ones((local, k, 1), np.float32)}, mesh)
  key = jax.device_put(np.asarray(jax.random.PRNGKey(1)), rep)
  update = jax.jit(steps.train_step, in_shardings=(rep, sharding.batch_sharded(mesh), rep),
                   out_shardings=(rep, rep), donate_argnums=(0,))
  print(f'backend {jax.default_backend()} ({jax.devices()[0].device_kind}), '
        f'{jax.device_count()} device(s); HRNet-W{config.model.width} {height}x{width}, '
        f'global batch {batch} ({_PER_DEVICE.value} per device), {_DTYPE.value}')

  start = time.perf_counter()
  compiled = update.lower(state, data, key).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops_per_step = float(cost.get('flops', float('nan')))  # per device under SPMD
  state, metrics = compiled(state, data, key)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(_STEPS.value):
    state, metrics = compiled(state, data, key)
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - start) / _STEPS.value
  print(f'train step: {batch / step_s:.1f} instances/s, {step_s * 1e3:.1f} ms/step, '
        f'compile {compile_s:.1f} s; {bench_utils.peak_memory(compiled)}')
  achieved = flops_per_step / step_s / 1e12
  line = f'XLA FLOPs per device per step {flops_per_step / 1e9:.1f} G: {achieved:.3f} TFLOP/s'
  if _PEAK.value:
    line += f' = {achieved / _PEAK.value:.1%} of the {_PEAK.value:g} TFLOP/s peak'
  print(line)


if __name__ == '__main__':
  app.run(main)
