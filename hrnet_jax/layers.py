"""Residual blocks and the conv/BN building pieces of HRNet, as the official PyTorch code.

Module names mirror the official state_dict: a Flax path segment ``name_3`` is the official
``name.3`` (see ``hrnet_jax.weights``), so every official tensor has exactly one home here.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any

# The official code initialises convolutions with N(0, 0.001) and BatchNorm with (1, 0).
conv_init = nn.initializers.normal(stddev=0.001)

BN_MOMENTUM = 0.9  # flax's momentum is 1 - torch's (the official BN_MOMENTUM = 0.1).
BN_EPSILON = 1e-5  # torch's default.


def conv(features: int, kernel: int, stride: int = 1, *, dtype: Dtype, name: str,
         use_bias: bool = False) -> nn.Conv:
  """A torch-style convolution: symmetric padding kernel // 2, float32 parameters."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=use_bias, dtype=dtype,
                 param_dtype=jnp.float32, kernel_init=conv_init, name=name)


def batch_norm(train: bool, *, dtype: Dtype, name: str) -> nn.BatchNorm:
  """BatchNorm with the official momentum and epsilon; batch statistics when training."""
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                      epsilon=BN_EPSILON, use_fast_variance=False, dtype=dtype,
                      param_dtype=jnp.float32, name=name)


def shortcut(x: jnp.ndarray, features: int, stride: int, train: bool, dtype: Dtype) -> jnp.ndarray:
  """Identity, or the official ``downsample`` (1x1 conv + BN) when the shape changes.

  Called from a block's compact method, so ``downsample_0``/``downsample_1`` are its children.
  """
  if stride == 1 and x.shape[-1] == features:
    return x
  x = conv(features, 1, stride, dtype=dtype, name='downsample_0')(x)
  return batch_norm(train, dtype=dtype, name='downsample_1')(x)


class BasicBlock(nn.Module):
  """Two 3x3 conv + BN layers with an identity (or 1x1 projection) shortcut."""
  planes: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    bn = functools.partial(batch_norm, train, dtype=self.dtype)
    y = conv(self.planes, 3, self.stride, dtype=self.dtype, name='conv1')(x)
    y = nn.relu(bn(name='bn1')(y))
    y = bn(name='bn2')(conv(self.planes, 3, dtype=self.dtype, name='conv2')(y))
    return nn.relu(y + shortcut(x, self.planes * self.expansion, self.stride, train, self.dtype))


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3, 1x1 expand (x4) conv + BN layers with a residual shortcut."""
  planes: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    bn = functools.partial(batch_norm, train, dtype=self.dtype)
    y = nn.relu(bn(name='bn1')(conv(self.planes, 1, dtype=self.dtype, name='conv1')(x)))
    y = conv(self.planes, 3, self.stride, dtype=self.dtype, name='conv2')(y)
    y = nn.relu(bn(name='bn2')(y))
    y = bn(name='bn3')(conv(self.planes * self.expansion, 1, dtype=self.dtype, name='conv3')(y))
    return nn.relu(y + shortcut(x, self.planes * self.expansion, self.stride, train, self.dtype))


BLOCKS = {'BASIC': BasicBlock, 'BOTTLENECK': Bottleneck}
