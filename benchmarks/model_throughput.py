r"""Forward and train-step throughput of a pose HRNet on the current JAX backend.

python benchmarks/model_throughput.py --config=configs/coco_w32.py --batch_size=32 \
    [--dtype=float32,bfloat16] [--notrain]

Prints images/s (forward in eval mode, and a full Adam train step unless ``--notrain``),
compile seconds, peak memory, a ``RESULT {json}`` line per (dtype, batch), and the
convolutions' multiply-adds per image beside the official 7.1 G of W32 256x192. Inputs are
random; weights are freshly initialised. Top-down and bottom-up recipes both work.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

from absl import app, flags, logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_utils  # noqa: E402

from hrnet_jax import models, steps  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/coco_w32.py', 'Recipe config.',
                                          lock_config=False)
_BATCH = flags.DEFINE_list('batch_size', ['32'], 'Images per step (a list runs each).')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps after the warm-up step.')
_DTYPE = flags.DEFINE_list('dtype', ['float32'], 'Compute dtypes (float32, bfloat16).')
_TRAIN = flags.DEFINE_bool('train', True, 'Also time the Adam train step.')
_COMPILE_ONLY = bench_utils.define_compile_only_flag()

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


def run(config, dtype: str, batch: int) -> None:
  """Compiles and times the forward (and the train step) at one (dtype, batch)."""
  config = config.copy_and_resolve_references()  # each run its own model config
  config.model.dtype = dtype
  model = models.create_model(config.model)
  step, data = bench_utils.synthetic_training(config, model, batch)
  images = jnp.asarray(data['image'])
  height, width = images.shape[1:3]
  state = steps.create_train_state(model, optax.adam(1e-3), jax.random.key(0),
                                   (1, height, width, 3))
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  result = {'bench': 'jax_model', 'model': config.model.name, 'width': config.model.width,
            'dtype': dtype, 'batch': batch}

  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  start = time.perf_counter()
  compiled_fwd = forward.lower(variables, images).compile()
  result['forward_compile_s'] = time.perf_counter() - start
  if _TRAIN.value:
    jitted = jax.jit(step, donate_argnums=(0,))
    key = jax.random.key(1)
    start = time.perf_counter()
    compiled_step = jitted.lower(state, data, key).compile()
    result['train_compile_s'] = time.perf_counter() - start
  if _COMPILE_ONLY.value:
    print(f'{dtype}, batch {batch}: compiled ' + ', '.join(
        f'{k} {v:.1f}' for k, v in result.items() if k.endswith('compile_s')), flush=True)
    return model, variables, images
  macs = bench_utils.conv_macs_per_image(model, variables, images[:1])
  result['model_flops_per_image'] = 2 * macs  # forward; a train step is 3x

  _, per_step = _time(compiled_fwd, variables, images, steps=_STEPS.value)
  result['forward_images_per_s'] = batch / per_step
  print(f'{dtype}, batch {batch}: forward {batch / per_step:8.1f} images/s  '
        f'({per_step * 1e3:.1f} ms/step, compile {result["forward_compile_s"]:.1f} s; '
        f'{bench_utils.peak_memory(compiled_fwd)}; '
        f'{2 * macs * batch / per_step / 1e12:.3g} model TFLOP/s)', flush=True)
  if _TRAIN.value:
    state, per_step = bench_utils.time_train_step(compiled_step, state, data, key, _STEPS.value)
    result['train_images_per_s'] = batch / per_step
    print(f'{dtype}, batch {batch}: train step {batch / per_step:8.1f} images/s  '
          f'({per_step * 1e3:.1f} ms/step, compile {result["train_compile_s"]:.1f} s; '
          f'{bench_utils.peak_memory(compiled_step)}; '
          f'{6 * macs * batch / per_step / 1e12:.3g} model TFLOP/s)', flush=True)
  print('RESULT ' + json.dumps(result), flush=True)
  return model, variables, images


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  print(f'backend {jax.default_backend()} ({jax.devices()[0].device_kind}), '
        f'{jax.device_count()} device(s); {config.model.name} W{config.model.width}')
  measured = None
  for dtype in _DTYPE.value:
    for batch in map(int, _BATCH.value):
      try:
        measured = run(config, dtype, batch)
      except jax.errors.JaxRuntimeError as e:
        if not bench_utils.is_out_of_memory(e):
          raise
        print(f'{dtype}, batch {batch}: out of memory', flush=True)
      finally:
        gc.collect()
  if measured is None:
    return
  model, variables, images = measured
  num_params = sum(x.size for x in jax.tree_util.tree_leaves(variables['params']))
  width, height = images.shape[2], images.shape[1]
  official = OFFICIAL_GMACS.get((config.model.width, (width, height)))
  print(f'parameters: {num_params:,}')
  macs = bench_utils.conv_macs_per_image(model, variables, images) / 1e9
  print(f'convolutions alone: {macs:.2f} G multiply-adds per image' +
        (f' (official: {official} GFLOPs, counted as convolution multiply-adds)'
         if official else ''))


if __name__ == '__main__':
  app.run(main)
