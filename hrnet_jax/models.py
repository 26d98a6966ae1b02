"""HRNet pose models in Flax linen: the official ``pose_hrnet`` and ``pose_higher_hrnet``, NHWC.

The topology is data: ``pose_hrnet_config`` builds an ``ml_collections.ConfigDict`` and the
modules read only the config they are given. Variable names follow the official state_dict
(``stage3_1/branches_2_0/conv1`` is ``stage3.1.branches.2.0.conv1``).
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from hrnet_jax import errors
from hrnet_jax.layers import (BLOCKS, BasicBlock, Bottleneck, Dtype, batch_norm, conv, conv_init,
                              relu)

# Layer 1 of every HRNet: four Bottlenecks of 64 planes (fixed in the official code).
STEM_CHANNELS = 64
LAYER1_BLOCKS = 4
# The backbone downsamples by 4 in the stem and by 8 more in its lowest branch.
INPUT_MULTIPLE = 32

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}
# model.fast_path: 'auto' takes hrnet_jax.fast_conv's path on the CPU backend only.
FAST_PATHS = ('auto', 'on', 'off')


def pose_hrnet_config(width: int, num_blocks: int = 4,
                      num_modules: Sequence[int] = (1, 4, 3), num_joints: int = 17,
                      final_conv_kernel: int = 1,
                      stem_blocks: int = LAYER1_BLOCKS) -> ml_collections.ConfigDict:
  """Returns the model config of a top-down HRNet-W{width} (W32: 28.5M parameters).

  ``stem_blocks`` is the number of Bottlenecks of stage 1 (official: 4); fewer make the
  small CPU models of the demo faster.
  """
  if len(num_modules) != 3:
    raise errors.UserError(f'num_modules must give stages 2, 3 and 4, got {num_modules!r}')
  if final_conv_kernel not in (1, 3):
    raise errors.UserError(f'final_conv_kernel must be 1 or 3, got {final_conv_kernel!r}')
  return ml_collections.ConfigDict({
      'name': 'pose_hrnet',
      'width': width,
      'num_blocks': num_blocks,
      'num_modules': tuple(num_modules),
      'num_joints': num_joints,
      'final_conv_kernel': final_conv_kernel,
      'stem_blocks': stem_blocks,
      'dtype': 'float32',
      # 'auto': the CPU training path of hrnet_jax.fast_conv on the CPU backend, plain XLA
      # elsewhere; 'on' / 'off' force it. Same parameters, same results to float32 rounding.
      'fast_path': 'auto',
  })


def higher_hrnet_config(width: int, num_blocks: int = 4,
                        num_modules: Sequence[int] = (1, 4, 3), num_joints: int = 17,
                        deconv_blocks: int = 4, final_conv_kernel: int = 1,
                        stem_blocks: int = LAYER1_BLOCKS) -> ml_collections.ConfigDict:
  """Returns the model config of a bottom-up HigherHRNet-W{width} (W32: 28.6M parameters).

  As the official COCO models: one deconvolution stage of ``width`` channels with
  ``deconv_blocks`` BasicBlocks, a tag per joint, associative-embedding tags at 1/4 only.
  """
  config = pose_hrnet_config(width, num_blocks, num_modules, num_joints, final_conv_kernel,
                             stem_blocks)
  config.name = 'higher_hrnet'
  config.deconv_blocks = deconv_blocks
  return config


def stage_channels(config: ml_collections.ConfigDict, stage: int) -> tuple[int, ...]:
  """Branch widths of stage 2, 3 or 4: width x (1, 2, 4, 8)[:stage]."""
  return tuple(config.width * 2**i for i in range(stage))


def compute_dtype(config: ml_collections.ConfigDict) -> Dtype:
  """The activation dtype named by ``config.dtype`` (parameters stay float32)."""
  name = config.dtype
  if name not in DTYPES:
    raise errors.UserError(f'model.dtype must be one of {sorted(DTYPES)}, got {name!r}')
  return DTYPES[name]


def use_fast_path(config: ml_collections.ConfigDict) -> bool:
  """Whether ``config.fast_path`` (absent in older saved configs: 'auto') selects the fast path.

  'auto' decides by ``jax.default_backend()`` when the model is traced.
  """
  name = config.get('fast_path', 'auto')
  if name not in FAST_PATHS:
    raise errors.UserError(f'model.fast_path must be one of {FAST_PATHS}, got {name!r}')
  return name == 'on' or (name == 'auto' and jax.default_backend() == 'cpu')


def upsample_nearest(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """Nearest-neighbour upsampling of NHWC by an integer factor (torch's mode='nearest')."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


class Transition(nn.Module):
  """Feeds one branch of the next stage: a 3x3 conv to a new width, or stride-2 convs down."""
  features: int
  num_downsamples: int
  dtype: Dtype = jnp.float32
  fast: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    cv = functools.partial(conv, dtype=self.dtype, fast=self.fast)
    if self.num_downsamples == 0:
      x = cv(self.features, 3, name='0')(x)
      return relu(batch_norm(train, dtype=self.dtype, name='1')(x), self.fast)
    for k in range(self.num_downsamples):
      last = k == self.num_downsamples - 1
      x = cv(self.features if last else x.shape[-1], 3, 2, name=f'{k}_0')(x)
      x = relu(batch_norm(train, dtype=self.dtype, name=f'{k}_1')(x), self.fast)
    return x


class FuseLayer(nn.Module):
  """Brings branch ``source`` to the resolution and width of branch ``target``.

  Lower resolution: 1x1 conv + BN + nearest upsampling. Higher resolution: a chain of
  stride-2 3x3 conv + BN, with ReLU on all but the last.
  """
  source: int
  target: int
  features: int
  dtype: Dtype = jnp.float32
  fast: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    bn = functools.partial(batch_norm, train, dtype=self.dtype)
    cv = functools.partial(conv, dtype=self.dtype, fast=self.fast)
    if self.source > self.target:
      x = bn(name='1')(cv(self.features, 1, name='0')(x))
      return upsample_nearest(x, 2**(self.source - self.target))
    steps = self.target - self.source
    for k in range(steps):
      last = k == steps - 1
      x = cv(self.features if last else x.shape[-1], 3, 2, name=f'{k}_0')(x)
      x = bn(name=f'{k}_1')(x)
      if not last:
        x = relu(x, self.fast)
    return x


class HighResolutionModule(nn.Module):
  """Parallel branches of BasicBlocks, then every output sums all branches (SUM fusion)."""
  num_channels: tuple[int, ...]
  num_blocks: int
  multi_scale_output: bool = True
  block: str = 'BASIC'
  dtype: Dtype = jnp.float32
  fast: bool = False

  @nn.compact
  def __call__(self, xs: Sequence[jnp.ndarray], train: bool = False) -> list[jnp.ndarray]:
    block = BLOCKS[self.block]
    num_branches = len(self.num_channels)
    if len(xs) != num_branches:
      raise ValueError(f'HighResolutionModule has {num_branches} branches, got {len(xs)} inputs')
    xs = list(xs)
    for b in range(num_branches):
      for k in range(self.num_blocks):
        block_k = block(self.num_channels[b], dtype=self.dtype, fast=self.fast,
                        name=f'branches_{b}_{k}')
        xs[b] = block_k(xs[b], train)
    if num_branches == 1:
      return xs

    def fuse(i: int, j: int) -> jnp.ndarray:
      if i == j:
        return xs[j]
      return FuseLayer(j, i, self.num_channels[i], dtype=self.dtype, fast=self.fast,
                       name=f'fuse_layers_{i}_{j}')(xs[j], train)

    outputs = []
    for i in range(num_branches if self.multi_scale_output else 1):
      y = fuse(i, 0)
      for j in range(1, num_branches):  # the official summation order
        y = y + fuse(i, j)
      outputs.append(relu(y, self.fast))
    return outputs


class HRNetBackbone(nn.Module):
  """Stem, layer1, transitions and stages 2-4; returns the highest-resolution features."""
  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    cfg, dtype, fast = self.config, compute_dtype(self.config), use_fast_path(self.config)
    h, w = images.shape[1:3]
    if images.ndim != 4 or h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
      raise errors.UserError(f'HRNet takes NHWC images with height and width divisible by '
                             f'{INPUT_MULTIPLE}, got shape {images.shape}')
    bn = functools.partial(batch_norm, train, dtype=dtype)
    cv = functools.partial(conv, dtype=dtype, fast=fast)
    x = images.astype(dtype)
    x = relu(bn(name='bn1')(cv(STEM_CHANNELS, 3, 2, name='conv1')(x)), fast)
    x = relu(bn(name='bn2')(cv(STEM_CHANNELS, 3, 2, name='conv2')(x)), fast)
    for k in range(cfg.stem_blocks):
      x = Bottleneck(STEM_CHANNELS, dtype=dtype, fast=fast, name=f'layer1_{k}')(x, train)

    xs, previous = [x], (STEM_CHANNELS * Bottleneck.expansion,)
    for stage, num_modules in zip((2, 3, 4), cfg.num_modules):
      channels = stage_channels(cfg, stage)
      inputs = []
      for i, features in enumerate(channels):  # the official _make_transition_layer
        if i < len(previous):
          if features == previous[i]:
            inputs.append(xs[i])
          else:
            inputs.append(Transition(features, 0, dtype=dtype, fast=fast,
                                     name=f'transition{stage - 1}_{i}')(xs[i], train))
        else:
          inputs.append(Transition(features, i + 1 - len(previous), dtype=dtype, fast=fast,
                                   name=f'transition{stage - 1}_{i}')(xs[-1], train))
      xs = inputs
      for m in range(num_modules):
        last_module_of_network = stage == 4 and m == num_modules - 1
        xs = HighResolutionModule(channels, cfg.num_blocks,
                                  multi_scale_output=not last_module_of_network, dtype=dtype,
                                  fast=fast, name=f'stage{stage}_{m}')(xs, train)
      previous = channels
    return xs[0]


class PoseHRNet(nn.Module):
  """Top-down HRNet: images (N, H, W, 3) to heatmaps (N, H/4, W/4, K), float32."""
  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    backbone = HRNetBackbone(self.config)
    nn.share_scope(self, backbone)  # backbone variables sit at the top level, as officially
    features = backbone(images, train)
    heatmaps = conv(self.config.num_joints, self.config.final_conv_kernel,
                    dtype=compute_dtype(self.config), use_bias=True, name='final_layer',
                    fast=use_fast_path(self.config))(features)
    return heatmaps.astype(jnp.float32)


class DeconvStage(nn.Module):
  """4x4 transposed conv with stride 2 (torch padding 1), BN, ReLU, then BasicBlocks.

  The kernel is stored as (kh, kw, out, in): the official ConvTranspose2d weight (in, out,
  kh, kw) under the same OIHW <-> HWIO transpose as every convolution.
  """
  features: int
  num_blocks: int
  dtype: Dtype = jnp.float32
  fast: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    # torch ConvTranspose2d(kernel 4, stride 2, padding 1) pads the dilated input by 4 - 1 - 1.
    x = nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                         transpose_kernel=True, use_bias=False, dtype=self.dtype,
                         param_dtype=jnp.float32, kernel_init=conv_init, name='0_0')(x)
    x = relu(batch_norm(train, dtype=self.dtype, name='0_1')(x), self.fast)
    for b in range(self.num_blocks):
      x = BasicBlock(self.features, dtype=self.dtype, fast=self.fast, name=f'{b + 1}_0')(x, train)
    return x


class HigherHRNet(nn.Module):
  """Bottom-up HigherHRNet: images (N, H, W, 3) to two float32 outputs.

  (N, H/4, W/4, 2K): K heatmaps then K associative-embedding tags; and (N, H/2, W/2, K):
  heatmaps from the deconvolution stage, fed the 1/4 features concatenated with the 1/4 output.
  """
  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, images: jnp.ndarray,
               train: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    cfg, dtype, fast = self.config, compute_dtype(self.config), use_fast_path(self.config)
    backbone = HRNetBackbone(cfg)
    nn.share_scope(self, backbone)  # backbone variables sit at the top level, as officially
    features = backbone(images, train)
    final = functools.partial(conv, kernel=cfg.final_conv_kernel, dtype=dtype, use_bias=True,
                              fast=fast)
    quarter = final(2 * cfg.num_joints, name='final_layers_0')(features)
    x = jnp.concatenate([features, quarter], axis=-1)
    x = DeconvStage(cfg.width, cfg.deconv_blocks, dtype=dtype, fast=fast,
                    name='deconv_layers_0')(x, train)
    half = final(cfg.num_joints, name='final_layers_1')(x)
    return quarter.astype(jnp.float32), half.astype(jnp.float32)


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The module named by ``config.name`` (``pose_hrnet_config``, ``higher_hrnet_config``)."""
  models = {'pose_hrnet': PoseHRNet, 'higher_hrnet': HigherHRNet}
  if config.name not in models:
    raise errors.UserError(f'unknown model name {config.name!r}; expected one of '
                           f'{sorted(models)}')
  return models[config.name](config)
