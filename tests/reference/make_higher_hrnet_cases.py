r"""Makes tests/fixtures/reference_higher_hrnet/: PyTorch reference cases for HigherHRNet.

Not run by the tests (it needs torch and munkres): it documents how those fixtures were made.

    pip install torch==2.13.0 munkres==3.0.0 && python tests/reference/make_higher_hrnet_cases.py

1. ``TorchHigherHRNet``, a direct port of the official ``pose_higher_hrnet.py`` head on the
   backbone of ``make_reference_cases.py``, must load ``small_higher_hrnet.pth`` strictly and
   reproduce both outputs of ``small_higher_hrnet_io.npz``; then it writes other widths,
   block, module and joint counts, final kernels and input sizes.
2. ``official_heatmap_parser.py``, a transcription of the official ``HeatmapParser``, must
   reproduce ``group_cases.npz`` exactly; then it groups random cases (crowds, ties, one-dim
   and two-dim tags, every option of ``parse``) into ``group_random.npz``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import nn

import official_heatmap_parser
from make_reference_cases import FIXTURES, BasicBlock, TorchPoseHRNet, randomize

OFFICIAL = os.path.join(FIXTURES, 'official_higher_hrnet')
OUT = os.path.join(FIXTURES, 'reference_higher_hrnet')


class TorchHigherHRNet(TorchPoseHRNet):
  """The official pose_higher_hrnet: final_layers at 1/4 (K + K tags) and 1/2, one deconv."""

  def __init__(self, width, num_blocks, num_modules, num_joints, final_kernel, deconv_blocks):
    super().__init__(width, num_blocks, num_modules, num_joints, final_kernel)
    del self.final_layer
    pad = 1 if final_kernel == 3 else 0
    self.final_layers = nn.ModuleList([
        nn.Conv2d(width, 2 * num_joints, final_kernel, 1, pad),
        nn.Conv2d(width, num_joints, final_kernel, 1, pad)])
    layers = [nn.Sequential(nn.ConvTranspose2d(width + 2 * num_joints, width, 4, 2, 1, 0,
                                               bias=False),
                            nn.BatchNorm2d(width), nn.ReLU())]
    layers += [nn.Sequential(BasicBlock(width, width)) for _ in range(deconv_blocks)]
    self.deconv_layers = nn.ModuleList([nn.Sequential(*layers)])

  def forward(self, x):
    features = self.features(x)
    quarter = self.final_layers[0](features)
    x = self.deconv_layers[0](torch.cat((features, quarter), 1))
    return quarter, self.final_layers[1](x)


def check_model_against_official() -> None:
  with open(os.path.join(OFFICIAL, 'small_higher_hrnet_config.json')) as f:
    c = json.load(f)
  model = TorchHigherHRNet(c['width'], c['blocks'], tuple(c['modules']), 17, 1,
                           c['deconv_blocks']).eval()
  model.load_state_dict(torch.load(os.path.join(OFFICIAL, 'small_higher_hrnet.pth')), strict=True)
  io = np.load(os.path.join(OFFICIAL, 'small_higher_hrnet_io.npz'))
  with torch.no_grad():
    outputs = model(torch.from_numpy(io['input_nchw']))
  for out, name in zip(outputs, ('output_stage1_nchw', 'output_stage2_nchw')):
    err = np.abs(out.numpy() - io[name]).max() / np.abs(io[name]).max()
    assert err < 1e-6, (name, err)
  print('port matches the official small HigherHRNet')


MODEL_CASES = {
    # name: (width, blocks, modules, joints, final kernel, deconv blocks, input (H, W))
    'hw4_b2_m121_k3_j5_d2_96x128': (4, 2, (1, 2, 1), 5, 3, 2, (96, 128)),
    'hw6_b1_m211_k1_j17_d1_160x96': (6, 1, (2, 1, 1), 17, 1, 1, (160, 96)),
}


def write_model_cases(generator: torch.Generator) -> None:
  for name, (width, blocks, modules, joints, kernel, deconv, (h, w)) in MODEL_CASES.items():
    model = TorchHigherHRNet(width, blocks, modules, joints, kernel, deconv).eval()
    randomize(model, generator)
    images = torch.randn((2, 3, h, w), generator=generator)
    with torch.no_grad():
      quarter, half = model(images)
    torch.save(model.state_dict(), os.path.join(OUT, f'{name}.pth'))
    np.savez_compressed(os.path.join(OUT, f'{name}.npz'), input_nchw=images.numpy(),
                        output_stage1_nchw=quarter.numpy(), output_stage2_nchw=half.numpy(),
                        width=width, num_blocks=blocks, num_modules=np.array(modules),
                        num_joints=joints, final_conv_kernel=kernel, deconv_blocks=deconv)
    print(f'{name}: outputs {tuple(quarter.shape)} and {tuple(half.shape)}')


def check_parser_against_official() -> None:
  data = np.load(os.path.join(OFFICIAL, 'group_cases.npz'))
  parser = official_heatmap_parser.HeatmapParser()
  for c in range(4):
    (people,), scores = parser.parse(torch.from_numpy(data[f'det_{c}']),
                                     torch.from_numpy(data[f'tag_{c}']))
    np.testing.assert_array_equal(np.array(people), data[f'people_{c}'])
    np.testing.assert_array_equal(np.array(scores), data[f'scores_{c}'])
  print('transcribed parser matches group_cases.npz')


def crowd_maps(rng: np.random.Generator, num_people: int, h: int, w: int, dim: int,
               quantize: bool, noise: float) -> tuple[np.ndarray, np.ndarray]:
  """Heatmaps (17, H, W) with a Gaussian per visible joint and tags (17, H, W, dim)."""
  yy, xx = np.mgrid[0:h, 0:w]
  # Coarse background values keep the fixture small: noise in steps of 1/1024, tags of 1/16.
  det = np.round(rng.random((17, h, w)) * noise * 1024) / 1024
  tag = np.round(rng.normal(0, 0.3, (17, h, w, dim)) * 16) / 16
  for _ in range(num_people):
    centre = rng.uniform([4, 4], [w - 4, h - 4])
    person_tag = rng.normal(0, 2, dim)
    spread = rng.uniform(2, 0.25 * min(h, w))
    for j in range(17):
      if rng.random() < 0.2:
        continue
      x, y = np.clip(centre + rng.normal(0, spread, 2), 0, [w - 1, h - 1])
      peak = rng.uniform(0.05, 1.0)
      blob = peak * np.exp(-((xx - x)**2 + (yy - y)**2) / (2 * rng.uniform(0.7, 2.0)**2))
      det[j] = np.maximum(det[j], blob)
      near = blob > 0.05 * peak
      tag[j][near] = person_tag + rng.normal(0, 0.15, (near.sum(), dim))
  if quantize:  # as the official fixture: ties in scores, tags and rounded distances
    det, tag = np.round(det * 256) / 256, np.round(tag * 64) / 64
  return det.astype(np.float32), tag.astype(np.float32)


GROUP_CASES = [
    # (people, H, W, tag dim, quantize, noise, parse options)
    (3, 64, 64, 1, True, 0.02, {}),
    (6, 128, 96, 1, False, 0.0, {}),
    (12, 96, 128, 2, True, 0.05, {}),
    (25, 128, 128, 1, True, 0.0, {}),
    (40, 128, 128, 1, False, 0.01, {}),
    (8, 64, 80, 2, True, 0.0, {'refine': False}),
    (8, 64, 80, 1, True, 0.02, {'adjust': False}),
    (10, 96, 96, 1, True, 0.0, {'use_detection_val': False}),
    (12, 96, 96, 1, True, 0.0, {'max_num_people': 5, 'ignore_too_much': True}),
    (12, 96, 96, 1, False, 0.0, {'max_num_people': 8}),
    (6, 80, 64, 2, True, 0.1, {'detection_threshold': 0.3, 'tag_threshold': 0.5}),
    (6, 80, 64, 1, True, 0.0, {'nms_kernel': 3}),
    (0, 64, 64, 1, False, 0.05, {}),
]


def write_group_cases(rng: np.random.Generator) -> None:
  arrays, options = {}, []
  for c, (num_people, h, w, dim, quantize, noise, kwargs) in enumerate(GROUP_CASES):
    det, tag = crowd_maps(rng, num_people, h, w, dim, quantize, noise)
    parser = official_heatmap_parser.HeatmapParser(
        nms_kernel=kwargs.get('nms_kernel', 5),
        **{k: v for k, v in kwargs.items() if k not in ('adjust', 'refine', 'nms_kernel')})
    (people,), scores = parser.parse(torch.from_numpy(det[None]), torch.from_numpy(tag[None]),
                                     adjust=kwargs.get('adjust', True),
                                     refine=kwargs.get('refine', True))
    people = np.array(people, np.float32).reshape(-1, 17, 3 + dim)
    arrays.update({f'det_{c}': det, f'tag_{c}': tag, f'people_{c}': people,
                   f'scores_{c}': np.array(scores, np.float32)})
    options.append(kwargs)
    print(f'group case {c}: {num_people} people drawn, {len(people)} found, options {kwargs}')
  np.savez_compressed(os.path.join(OUT, 'group_random.npz'), options=json.dumps(options),
                      **arrays)


def main() -> None:
  check_model_against_official()
  check_parser_against_official()
  os.makedirs(OUT, exist_ok=True)
  write_model_cases(torch.Generator().manual_seed(20261121))
  write_group_cases(np.random.default_rng(20261121))


if __name__ == '__main__':
  main()
