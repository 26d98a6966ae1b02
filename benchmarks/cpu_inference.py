r"""CPU forward images/s of HRNet-W32 256x192 and HigherHRNet-W32 512: JAX, ONNX Runtime and
(if torch is installed) the project's PyTorch port of the official model, in one run.

python benchmarks/cpu_inference.py [--models=coco_w32,coco_higherhrnet_w32_512] \
    [--batch_sizes=1,8] [--rounds=5] [--threads=N]

The same random weights for all three (speed does not depend on them): the JAX model as the
predictor runs it (``model.apply`` in eval mode, jitted; XLA:CPU uses every core); the ONNX
export of ``hrnet_jax.export`` (BatchNorm folded) in an ONNX Runtime session with all graph
optimisations and ``--threads`` intra-op threads; the PyTorch port (``TorchPoseHRNet`` /
``TorchHigherHRNet`` of tests/reference, eval mode, ``inference_mode``) with
``torch.set_num_threads(--threads)``. Each is warmed up once, then the backends are timed
interleaved, ``--rounds`` forwards each, so other load on the machine hits them alike; the
median is reported. Prints a table, the ratios and a ``RESULT {json}`` line.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from absl import app, flags
import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Not this folder: its input_pipeline.py would hide the package of that name.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != os.path.join(REPO, 'benchmarks')]
sys.path.insert(0, os.path.join(REPO, 'tests'))
sys.path.insert(0, os.path.join(REPO, 'tests', 'reference'))
from conftest import random_variables  # noqa: E402  (the tests' fast random init)

from hrnet_jax import config_lib, export, models, tasks  # noqa: E402

_MODELS = flags.DEFINE_list('models', ['coco_w32', 'coco_higherhrnet_w32_512'],
                            'Recipes of configs/ to time.')
_BATCHES = flags.DEFINE_list('batch_sizes', ['1', '8'], 'Batch sizes.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Timed forwards per backend and batch size.')
_THREADS = flags.DEFINE_integer('threads', os.cpu_count(), 'ONNX Runtime and torch threads.')


def jax_backend(config, variables):
  model = models.create_model(config.model)
  forward = jax.jit(lambda x: model.apply(variables, x, train=False))
  return lambda x: jax.block_until_ready(forward(x))


def onnx_backend(config, variables):
  data = export.to_onnx(tasks.get_task(config).exportable(variables))
  session = export.onnxruntime_session(data, _THREADS.value)
  return lambda x: session.run(None, {'image': x})


def torch_backend(config):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  from make_higher_hrnet_cases import TorchHigherHRNet  # pylint: disable=g-import-not-at-top
  from make_reference_cases import TorchPoseHRNet  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(_THREADS.value)
  m = config.model
  args = (m.width, m.num_blocks, tuple(m.num_modules), m.num_joints, m.final_conv_kernel)
  net = (TorchHigherHRNet(*args, deconv_blocks=m.deconv_blocks) if 'deconv_blocks' in m
         else TorchPoseHRNet(*args)).eval()

  def forward(x):
    with torch.inference_mode():
      return net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
  return forward


def main(argv: list[str]) -> None:
  del argv
  rows = []
  for name in _MODELS.value:
    config = config_lib.load_recipe(os.path.join(REPO, 'configs', f'{name}.py'))
    width, height = tasks.get_task(config).input_size
    shape = (height, width)
    variables = random_variables(config.model)
    backends = {'jax': jax_backend(config, variables),
                'onnxruntime': onnx_backend(config, variables)}
    torch_forward = torch_backend(config)
    if torch_forward is not None:
      backends['torch'] = torch_forward
    for batch in (int(b) for b in _BATCHES.value):
      x = np.random.default_rng(0).normal(size=(batch, *shape, 3)).astype(np.float32)
      times = {k: [] for k in backends}
      for forward in backends.values():
        forward(x)  # compile, allocate
      for _ in range(_ROUNDS.value):
        for key, forward in backends.items():
          start = time.perf_counter()
          forward(x)
          times[key].append(time.perf_counter() - start)
      rate = {k: batch / statistics.median(v) for k, v in times.items()}
      rows.append({'model': name, 'input': list(shape), 'batch': batch,
                   'images_per_second': {k: round(v, 2) for k, v in rate.items()},
                   'onnxruntime_over_jax': round(rate['onnxruntime'] / rate['jax'], 2),
                   'onnxruntime_over_torch': (round(rate['onnxruntime'] / rate['torch'], 2)
                                              if 'torch' in rate else None)})
      print(f'{name} {shape[0]}x{shape[1]} batch {batch}: ' +
            ', '.join(f'{k} {v:.2f}' for k, v in rate.items()) + ' images/s; onnxruntime / jax '
            f'{rows[-1]["onnxruntime_over_jax"]}x, / torch {rows[-1]["onnxruntime_over_torch"]}x',
            flush=True)
  print('RESULT ' + json.dumps({'threads': _THREADS.value, 'cpus': os.cpu_count(), 'rows': rows}))


if __name__ == '__main__':
  app.run(main)
