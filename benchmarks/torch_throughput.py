r"""The official HRNet / HigherHRNet in PyTorch, timed as the JAX benchmarks time ours.

python benchmarks/torch_throughput.py --config=configs/coco_w32.py --batch_size=32,64 \
    [--precision=fp32,amp] [--steps=10]

The model is the project's PyTorch port of the official topology (``TorchPoseHRNet`` and
``TorchHigherHRNet`` of tests/reference, checked there against the official code's outputs),
built from the recipe's ``config.model``. Eager mode, channels-last, ``cudnn.benchmark`` on
(as the official train.py sets it); ``fp32`` leaves PyTorch's default of TF32 convolutions
on, ``amp`` autocasts to bfloat16. Times the forward in eval mode under ``inference_mode``
and an Adam train step: the official JointsMSELoss with target weights (top-down), or the
masked heatmap losses at 1/4 and 1/2 plus the associative-embedding loss written with tensor
ops (bottom-up; the official AELoss loops over people in Python, which is slower).
Prints images/s, step time and peak memory, and a ``RESULT {json}`` line per run.
Needs torch (a CUDA GPU for meaningful numbers); not used by the tests.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, '..', 'tests', 'reference'))
from make_higher_hrnet_cases import TorchHigherHRNet  # noqa: E402
from make_reference_cases import TorchPoseHRNet  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/coco_w32.py', 'Recipe config.')
_BATCH = flags.DEFINE_list('batch_size', ['32'], 'Images per step (a list runs each).')
_PRECISION = flags.DEFINE_list('precision', ['fp32', 'amp'], 'fp32 and/or amp (bfloat16).')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps after the warm-up steps.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps first (cuDNN picks algorithms).')


def build(config) -> torch.nn.Module:
  """The official topology for ``config.model``; HigherHRNet has a deconvolution head."""
  m = config.model
  args = (m.width, m.num_blocks, tuple(m.num_modules), m.num_joints, m.final_conv_kernel)
  if 'deconv_blocks' in m:
    return TorchHigherHRNet(*args, deconv_blocks=m.deconv_blocks)
  return TorchPoseHRNet(*args)


def input_size(config) -> tuple[int, int]:
  """(height, width) of the network input."""
  if 'image_size' in config.dataset:
    width, height = config.dataset.image_size
    return height, width
  return (config.dataset.input_size,) * 2


def ae_loss(tags: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
  """The official 'exp' AELoss (push + pull, per image), vectorised over people."""
  n = tags.shape[0]
  flat = tags.float().reshape(n, -1)
  index, valid = locations[..., 0].long(), locations[..., 1].float()
  picked = torch.gather(flat, 1, index.reshape(n, -1)).reshape(index.shape)
  count = valid.sum(2)
  present = (count > 0).float()
  mean = (picked * valid).sum(2) / count.clamp(min=1)
  variance = ((picked - mean[..., None]) ** 2 * valid).sum(2) / count.clamp(min=1)
  num = present.sum(1)
  pull = (variance * present).sum(1) / num.clamp(min=1)
  pairs = present[:, :, None] * present[:, None, :]
  push = (torch.exp(-(mean[:, :, None] - mean[:, None, :]) ** 2) * pairs).sum((1, 2)) - num
  push = push / ((num - 1) * num).clamp(min=1) * 0.5
  return (push + pull) * 1e-3


def loss_and_inputs(config, batch: int, device):
  """A loss function of the model's outputs and random inputs of the recipe's shapes."""
  height, width = input_size(config)
  k = config.model.num_joints
  gen = torch.Generator().manual_seed(0)
  image = torch.randn(batch, 3, height, width, generator=gen).to(
      device, memory_format=torch.channels_last)
  if 'deconv_blocks' not in config.model:
    target = torch.rand(batch, k, height // 4, width // 4, generator=gen).to(device)
    weight = torch.ones(batch, k, 1, device=device)

    def top_down(out):  # official JointsMSELoss(use_target_weight=True)
      w = weight[..., None]
      return 0.5 * ((out.float() * w - target * w) ** 2).mean((0, 2, 3)).mean()
    return top_down, image

  hq, wq, hh, wh = height // 4, width // 4, height // 2, width // 2
  quarter = torch.rand(batch, k, hq, wq, generator=gen).to(device)
  half = torch.rand(batch, k, hh, wh, generator=gen).to(device)
  index = torch.randint(0, k * hq * wq, (batch, 30, k, 1), generator=gen)
  locations = torch.cat([index, torch.randint(0, 2, index.shape, generator=gen)], -1).to(device)

  def bottom_up(out):
    q, h = out
    heat = ((q[:, :k].float() - quarter) ** 2).mean((1, 2, 3)) + (
        (h.float() - half) ** 2).mean((1, 2, 3))
    return (heat + ae_loss(q[:, k:], locations)).mean()
  return bottom_up, image


def timed(fn, steps: int) -> float:
  """Mean seconds per call after the warm-up calls."""
  for _ in range(_WARMUP.value):
    fn()
  torch.cuda.synchronize()
  start = time.perf_counter()
  for _ in range(steps):
    fn()
  torch.cuda.synchronize()
  return (time.perf_counter() - start) / steps


def run(config, precision: str, batch: int, device) -> dict:
  """Times the forward and the Adam train step at one (precision, batch)."""
  model = build(config).to(device, memory_format=torch.channels_last)
  loss_fn, image = loss_and_inputs(config, batch, device)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  amp = precision == 'amp'
  result = {'bench': 'torch', 'model': config.model.name, 'width': config.model.width,
            'precision': precision, 'batch': batch}

  def forward():
    with torch.inference_mode(), torch.autocast('cuda', torch.bfloat16, enabled=amp):
      return model(image)

  def train():
    with torch.autocast('cuda', torch.bfloat16, enabled=amp):
      loss = loss_fn(model(image))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()

  for name, fn, mode in (('forward', forward, model.eval), ('train', train, model.train)):
    mode()
    torch.cuda.reset_peak_memory_stats()
    seconds = timed(fn, _STEPS.value)
    result[f'{name}_images_per_s'] = batch / seconds
    result[f'{name}_ms'] = seconds * 1e3
    result[f'{name}_peak_gib'] = torch.cuda.max_memory_allocated() / 2**30
    print(f'{precision}, batch {batch}: {name} {batch / seconds:8.1f} images/s '
          f'({seconds * 1e3:.1f} ms/step, {result[f"{name}_peak_gib"]:.2f} GiB peak)',
          flush=True)
  print('RESULT ' + json.dumps(result), flush=True)
  return result


def main(argv: list[str]) -> None:
  del argv
  torch.backends.cudnn.benchmark = True
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  config = _CONFIG.value
  print(f'torch {torch.__version__} on {torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}; '
        f'cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}; {config.model.name} '
        f'W{config.model.width} {input_size(config)}', flush=True)
  for precision in _PRECISION.value:
    for batch in map(int, _BATCH.value):
      try:
        run(config, precision, batch, device)
      except torch.OutOfMemoryError:
        print(f'{precision}, batch {batch}: out of memory', flush=True)
      torch.cuda.empty_cache()


if __name__ == '__main__':
  app.run(main)
