r"""The CPU train step with and without the fast path (model.fast_path), side by side.

python benchmarks/cpu_train_step.py [--config=configs/coco_w32.py] [--batch_size=8] \
    [--steps=3] [--noforward]

Compiles the recipe's Adam train step (and the eval-mode forward) twice, with
``model.fast_path='off'`` (plain XLA) and ``'on'`` (hrnet_jax.fast_conv), from the same
parameters and random batch, then times them interleaved (old, new, old, new, ...) so that
other load on the machine disturbs both alike. Prints each round, the medians, images/s,
the ratio, how far the two losses and gradient norms are apart, and a ``RESULT {json}`` line.
"""

from __future__ import annotations

import functools
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
_BATCH = flags.DEFINE_integer('batch_size', 8, 'Images per step.')
_STEPS = flags.DEFINE_integer('steps', 3, 'Timed rounds (one step of each path per round) '
                              'after one warm-up step of each.')
_FORWARD = flags.DEFINE_bool('forward', True, 'Also time the eval-mode forward.')

PATHS = ('off', 'on')  # old (plain XLA), new (fast path)


def _interleaved(fns: dict, rounds: int) -> dict[str, list[float]]:
  """Seconds per call of each zero-argument function, called in turn ``rounds`` times."""
  for fn in fns.values():
    jax.block_until_ready(fn())  # warm-up
  seconds = {name: [] for name in fns}
  for r in range(rounds):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      seconds[name].append(time.perf_counter() - start)
    print(f'  round {r + 1}: ' + ', '.join(f'{n} {s[-1]:.2f} s' for n, s in seconds.items()),
          flush=True)
  return seconds


def _report(what: str, seconds: dict[str, list[float]], batch: int, result: dict) -> None:
  """Prints the medians of both paths and their ratio; adds them to ``result``."""
  rate = {name: batch / float(np.median(s)) for name, s in seconds.items()}
  for name in PATHS:
    print(f'{what} fast_path={name}: {rate[name]:.3f} images/s '
          f'(median {np.median(seconds[name]):.2f} s of {len(seconds[name])})')
    result[f'{what}_images_per_s_{name}'] = rate[name]
  result[f'{what}_speedup'] = rate['on'] / rate['off']
  print(f'{what} speed-up (on / off): {rate["on"] / rate["off"]:.2f}x', flush=True)


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  config, batch = _CONFIG.value, _BATCH.value
  print(f'backend {jax.default_backend()} ({jax.devices()[0].device_kind}); '
        f'{config.model.name} W{config.model.width}, batch {batch}')
  compiled, states, variables = {}, {}, {}
  data = key = None
  result = {'bench': 'cpu_train_step', 'model': config.model.name,
            'width': config.model.width, 'batch': batch}
  lowered = {}
  for name in PATHS:
    # A model config of its own: modules holding one mutated ConfigDict compare equal, and
    # jit may then reuse the first path's trace for the second.
    model_config = config.model.copy_and_resolve_references()
    model_config.fast_path = name
    model = models.create_model(model_config)
    step, data = bench_utils.synthetic_training(config, model, batch)  # same seed: same batch
    data = jax.tree.map(jnp.asarray, data)
    height, width = data['image'].shape[1:3]
    states[name] = steps.create_train_state(model, optax.adam(1e-3), jax.random.key(0),
                                            (1, height, width, 3))
    variables[name] = {'params': states[name].params, 'batch_stats': states[name].batch_stats}
    key = jax.random.key(1)
    start = time.perf_counter()
    lowered[name] = jax.jit(functools.partial(step)).lower(states[name], data, key)
    compiled[name] = lowered[name].compile()
    result[f'train_compile_s_{name}'] = time.perf_counter() - start
    if _FORWARD.value:
      start = time.perf_counter()
      compiled[name, 'forward'] = jax.jit(
          lambda v, x, model=model: model.apply(v, x, train=False)).lower(
              variables[name], data['image']).compile()
      result[f'forward_compile_s_{name}'] = time.perf_counter() - start
    print(f'fast_path={name}: compiled the train step in {result[f"train_compile_s_{name}"]:.0f} s'
          + (f', the forward in {result[f"forward_compile_s_{name}"]:.0f} s'
             if _FORWARD.value else ''), flush=True)

  if lowered['off'].as_text() == lowered['on'].as_text():
    raise RuntimeError('both paths lowered to the same program')
  metrics = {name: compiled[name](states[name], data, key)[1] for name in PATHS}
  for m in ('loss', 'grad_norm'):
    old, new = float(metrics['off'][m]), float(metrics['on'][m])
    result[f'{m}_relative_difference'] = abs(new - old) / abs(old)
    print(f'{m}: off {old:.6g}, on {new:.6g} (relative difference {abs(new - old) / abs(old):.1e})')

  print('train step, interleaved:')
  seconds = _interleaved({name: lambda name=name: compiled[name](states[name], data, key)
                          for name in PATHS}, _STEPS.value)
  _report('train', seconds, batch, result)
  if _FORWARD.value:
    images = jnp.asarray(data['image'])
    print('forward (eval mode), interleaved:')
    forward = {name: lambda name=name: compiled[name, 'forward'](variables[name], images)
               for name in PATHS}
    seconds = _interleaved(forward, max(_STEPS.value, 5))
    _report('forward', seconds, batch, result)
  print('RESULT ' + json.dumps(result), flush=True)


if __name__ == '__main__':
  app.run(main)
