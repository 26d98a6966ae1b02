r"""Training throughput of the data-parallel train step, as launch/train.py runs it.

python benchmarks/train_throughput.py --config=configs/coco_w32.py --per_device_batch=32,64 \
    [--dtype=float32,bfloat16] [--peak_tflops=bf16=989,fp32=67] [--steps=10]

Runs the jitted, donated update over the data mesh of all devices with random inputs of the
recipe's shapes (the input pipeline has its own benchmark), for every batch size and dtype
given. Prints instances/s, step time, compile time, peak memory, and the achieved fraction of
each ``--peak_tflops`` (dense FLOP/s of one device; an H100 SXM: bf16=989, tf32=495, fp32=67)
by the model FLOPs of a step: 3 x 2 x the convolutions' multiply-adds per instance (forward,
input and weight gradients; XLA's own count misses the cuDNN calls on a GPU), and a ``RESULT {json}`` line per run. A batch that does not
fit prints ``out of memory`` and the next one runs. Top-down and bottom-up recipes both work.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

from absl import app, flags, logging
import jax
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_utils  # noqa: E402

from hrnet_jax import models, optim, sharding, steps  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/coco_w32.py', 'Recipe config.',
                                          lock_config=False)
_PER_DEVICE = flags.DEFINE_list('per_device_batch', ['32'], 'Instances per device per step.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps after the compile and one warm step.')
_DTYPE = flags.DEFINE_list('dtype', ['float32'], 'Compute dtypes (float32, bfloat16).')
_PEAK = flags.DEFINE_list('peak_tflops', [], 'NAME=TFLOP/s peaks of one device (or one number).')
_COMPILE_ONLY = bench_utils.define_compile_only_flag()


def run(config, dtype: str, per_device: int) -> dict:
  """Compiles and times one (dtype, batch) configuration; returns its figures."""
  config = config.copy_and_resolve_references()  # each run its own model config
  config.model.dtype = dtype
  mesh = sharding.data_mesh()
  batch = per_device * jax.device_count()
  model = models.create_model(config.model)
  step, local = bench_utils.synthetic_training(config, model, batch // jax.process_count())
  tx = optim.create_optimizer(config, optim.create_learning_rate_fn(config, 1000))
  rep = sharding.replicated(mesh)
  shape = (1,) + local['image'].shape[1:]
  state = jax.jit(lambda rng: steps.create_train_state(model, tx, rng, shape),
                  out_shardings=rep)(jax.random.key(0))
  data = sharding.global_batch(local, mesh)
  key = jax.device_put(jax.random.key(1), rep)
  update = jax.jit(step, in_shardings=(rep, sharding.batch_sharded(mesh), rep),
                   out_shardings=(rep, rep), donate_argnums=(0,))
  start = time.perf_counter()
  compiled = update.lower(state, data, key).compile()
  compile_s = time.perf_counter() - start
  if _COMPILE_ONLY.value:
    print(f'{dtype}, {per_device} per device: compiled in {compile_s:.1f} s', flush=True)
    return {}
  macs = bench_utils.conv_macs_per_image(model, {'params': state.params,
                                                 'batch_stats': state.batch_stats},
                                         local['image'][:1])
  state, step_s = bench_utils.time_train_step(compiled, state, data, key, _STEPS.value)
  return {'images_per_s': batch / step_s, 'step_ms': step_s * 1e3, 'compile_s': compile_s,
          'xla_flops_per_device': bench_utils.flops(compiled),
          'model_flops_per_device': 6 * macs * per_device,
          'memory': bench_utils.peak_memory(compiled)}


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  peaks = [p.split('=') if '=' in p else ('peak', p) for p in _PEAK.value]
  print(f'backend {jax.default_backend()} ({jax.devices()[0].device_kind}), '
        f'{jax.device_count()} device(s); {config.model.name} W{config.model.width}')
  for dtype in _DTYPE.value:
    for per_device in map(int, _PER_DEVICE.value):
      head = f'{dtype}, {per_device} per device:'
      try:
        r = run(config, dtype, per_device)
      except jax.errors.JaxRuntimeError as e:
        if not bench_utils.is_out_of_memory(e):
          raise
        print(f'{head} out of memory', flush=True)
        continue
      finally:
        gc.collect()
      if not r:
        continue
      achieved = r['model_flops_per_device'] / (r['step_ms'] / 1e3) / 1e12
      r['tflops'] = achieved
      fractions = ', '.join(f'{achieved / float(v):.1%} of {n} {float(v):g}' for n, v in peaks)
      print(f'{head} {r["images_per_s"]:.1f} instances/s, {r["step_ms"]:.1f} ms/step, compile '
            f'{r["compile_s"]:.1f} s; {r["memory"]}; model FLOPs per device per step '
            f'{r["model_flops_per_device"] / 1e9:.1f} G = {achieved:.3g} TFLOP/s'
            + (f' ({fractions})' if fractions else ''), flush=True)
      print('RESULT ' + json.dumps({'bench': 'jax_train', 'model': config.model.name,
                                    'width': config.model.width, 'dtype': dtype,
                                    'per_device': per_device, **r}), flush=True)


if __name__ == '__main__':
  app.run(main)
