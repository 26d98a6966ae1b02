r"""Makes tests/fixtures/reference_hrnet/: PyTorch reference cases for more HRNet architectures.

Not run by the tests (it needs torch): it documents how those fixtures were made.

    pip install torch && python tests/reference/make_reference_cases.py

``TorchPoseHRNet`` below is a direct PyTorch port of the official ``pose_hrnet.py`` topology.
It is first checked against the official fixture (``small_hrnet.pth`` must load strictly and
reproduce ``small_hrnet_io.npz``); only then does it write cases for other widths, block and
module counts, joint counts, final kernels and input sizes, saved in both the zip and the
legacy ``torch.save`` formats, plus an ImageNet-style classification checkpoint.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, '..', 'fixtures')


def conv3x3(cin, cout, stride=1):
  return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1, self.bn1 = conv3x3(inplanes, planes, stride), nn.BatchNorm2d(planes)
    self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
    self.relu, self.downsample = nn.ReLU(), downsample

  def forward(self, x):
    out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
    residual = x if self.downsample is None else self.downsample(x)
    return self.relu(out + residual)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1, self.bn1 = nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes)
    self.conv2, self.bn2 = conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu, self.downsample = nn.ReLU(), downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    residual = x if self.downsample is None else self.downsample(x)
    return self.relu(out + residual)


class HighResolutionModule(nn.Module):

  def __init__(self, num_blocks, channels, multi_scale_output=True):
    super().__init__()
    self.n, self.multi_scale_output = len(channels), multi_scale_output
    self.branches = nn.ModuleList([
        nn.Sequential(*[BasicBlock(c, c) for _ in range(num_blocks)]) for c in channels])
    self.relu = nn.ReLU()
    if self.n == 1:
      self.fuse_layers = None
      return
    fuse_layers = []
    for i in range(self.n if multi_scale_output else 1):
      layer = []
      for j in range(self.n):
        if j > i:
          layer.append(nn.Sequential(nn.Conv2d(channels[j], channels[i], 1, 1, 0, bias=False),
                                     nn.BatchNorm2d(channels[i]),
                                     nn.Upsample(scale_factor=2**(j - i), mode='nearest')))
        elif j == i:
          layer.append(None)
        else:
          convs = []
          for k in range(i - j):
            if k == i - j - 1:
              convs.append(nn.Sequential(nn.Conv2d(channels[j], channels[i], 3, 2, 1, bias=False),
                                         nn.BatchNorm2d(channels[i])))
            else:
              convs.append(nn.Sequential(nn.Conv2d(channels[j], channels[j], 3, 2, 1, bias=False),
                                         nn.BatchNorm2d(channels[j]), nn.ReLU()))
          layer.append(nn.Sequential(*convs))
      fuse_layers.append(nn.ModuleList(layer))
    self.fuse_layers = nn.ModuleList(fuse_layers)

  def forward(self, x):
    x = [branch(xi) for branch, xi in zip(self.branches, x)]
    if self.n == 1:
      return x
    out = []
    for i in range(len(self.fuse_layers)):
      y = x[0] if i == 0 else self.fuse_layers[i][0](x[0])
      for j in range(1, self.n):
        y = y + (x[j] if i == j else self.fuse_layers[i][j](x[j]))
      out.append(self.relu(y))
    return out


class TorchPoseHRNet(nn.Module):
  """The official pose_hrnet topology (stage4_multi_scale=True gives the classification one)."""

  def __init__(self, width, num_blocks, num_modules, num_joints, final_kernel,
               stage4_multi_scale=False):
    super().__init__()
    self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
    self.conv2, self.bn2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
    self.relu = nn.ReLU()
    down = nn.Sequential(nn.Conv2d(64, 256, 1, bias=False), nn.BatchNorm2d(256))
    self.layer1 = nn.Sequential(Bottleneck(64, 64, downsample=down),
                                *[Bottleneck(256, 64) for _ in range(3)])
    previous = [256]
    for stage, modules in zip((2, 3, 4), num_modules):
      channels = [width * 2**i for i in range(stage)]
      setattr(self, f'transition{stage - 1}', self._transition(previous, channels))
      last = stage == 4 and not stage4_multi_scale
      setattr(self, f'stage{stage}', nn.Sequential(*[
          HighResolutionModule(num_blocks, channels, not (last and m == modules - 1))
          for m in range(modules)]))
      previous = channels
    self.final_layer = nn.Conv2d(width, num_joints, final_kernel, 1, 1 if final_kernel == 3 else 0)

  @staticmethod
  def _transition(pre, cur):
    layers = []
    for i, c in enumerate(cur):
      if i < len(pre):
        layers.append(None if c == pre[i] else nn.Sequential(
            nn.Conv2d(pre[i], c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()))
      else:
        convs = []
        for j in range(i + 1 - len(pre)):
          out = c if j == i - len(pre) else pre[-1]
          convs.append(nn.Sequential(nn.Conv2d(pre[-1], out, 3, 2, 1, bias=False),
                                     nn.BatchNorm2d(out), nn.ReLU()))
        layers.append(nn.Sequential(*convs))
    return nn.ModuleList(layers)

  def features(self, x):
    """The highest-resolution output of stage 4."""
    x = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
    ys = [self.layer1(x)]
    for stage in (2, 3, 4):
      transition = getattr(self, f'transition{stage - 1}')
      xs = []
      for i, t in enumerate(transition):
        src = ys[i] if i < len(ys) else ys[-1]
        xs.append(src if t is None else t(src))
      ys = getattr(self, f'stage{stage}')(xs)
    return ys[0]

  def forward(self, x):
    return self.final_layer(self.features(x))


def randomize(model: nn.Module, generator: torch.Generator) -> None:
  """Random weights and random BN statistics, so BN in eval mode is not the identity."""
  with torch.no_grad():
    for name, tensor in model.state_dict().items():
      if name.endswith('num_batches_tracked'):
        continue
      if name.endswith('running_var'):
        tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
      elif name.endswith('running_mean') or name.endswith('bias'):
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
      elif tensor.ndim == 1:  # BN weight
        tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
      else:
        fan_in = tensor[0].numel()
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2.0 / fan_in) ** 0.5)


def check_against_official() -> None:
  """The port must load the official small model strictly and reproduce its heatmaps."""
  official = os.path.join(FIXTURES, 'official_hrnet')
  model = TorchPoseHRNet(8, 1, (1, 1, 1), 17, 1).eval()
  model.load_state_dict(torch.load(os.path.join(official, 'small_hrnet.pth')), strict=True)
  io = np.load(os.path.join(official, 'small_hrnet_io.npz'))
  with torch.no_grad():
    out = model(torch.from_numpy(io['input_nchw'])).numpy()
  err = np.abs(out - io['heatmaps_nchw']).max() / np.abs(io['heatmaps_nchw']).max()
  assert err < 1e-6, err
  print(f'port matches the official small model: max rel error {err:.2e}')


CASES = {
    # name: (width, blocks, modules, joints, final kernel, input (H, W), zip format)
    'w4_b2_m121_k3_j5_96x64': (4, 2, (1, 2, 1), 5, 3, (96, 64), True),
    'w6_b1_m212_k1_j16_160x128': (6, 1, (2, 1, 2), 16, 1, (160, 128), False),
}


def main() -> None:
  check_against_official()
  out_dir = os.path.join(FIXTURES, 'reference_hrnet')
  os.makedirs(out_dir, exist_ok=True)
  generator = torch.Generator().manual_seed(20261121)
  for name, (width, blocks, modules, joints, kernel, (h, w), zip_format) in CASES.items():
    model = TorchPoseHRNet(width, blocks, modules, joints, kernel).eval()
    randomize(model, generator)
    images = torch.randn((2, 3, h, w), generator=generator)
    with torch.no_grad():
      heatmaps = model(images).numpy()
    torch.save(model.state_dict(), os.path.join(out_dir, f'{name}.pth'),
               _use_new_zipfile_serialization=zip_format)
    np.savez_compressed(os.path.join(out_dir, f'{name}.npz'), input_nchw=images.numpy(),
                        heatmaps_nchw=heatmaps, width=width, num_blocks=blocks,
                        num_modules=np.array(modules), num_joints=joints, final_conv_kernel=kernel)
    print(f'{name}: heatmaps {heatmaps.shape}, {"zip" if zip_format else "legacy"} format')

  # An ImageNet-classification-style checkpoint: all four stage-4 outputs, a classifier head.
  model = TorchPoseHRNet(4, 1, (1, 1, 1), 17, 1, stage4_multi_scale=True)
  randomize(model, generator)
  state = {k: v for k, v in model.state_dict().items() if not k.startswith('final_layer')}
  # The head's tensors, small (the real ones are 32x4x1x1 ... 1000x2048).
  state['incre_modules.0.0.conv1.weight'] = torch.randn(8, 4, 1, 1, generator=generator)
  state['final_layer.0.weight'] = torch.randn(16, 8, 1, 1, generator=generator)
  state['classifier.weight'] = torch.randn(10, 16, generator=generator)
  state['classifier.bias'] = torch.randn(10, generator=generator)
  torch.save(state, os.path.join(out_dir, 'imagenet_style_w4.pth'),
             _use_new_zipfile_serialization=False)
  print('imagenet_style_w4.pth written')


if __name__ == '__main__':
  main()
