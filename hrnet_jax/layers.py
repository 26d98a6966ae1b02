"""Residual blocks and the conv/BN building pieces of HRNet, as the official PyTorch code.

Module names mirror the official state_dict: a Flax path segment ``name_3`` is the official
``name.3`` (see ``hrnet_jax.weights``), so every official tensor has exactly one home here.

``fast`` selects the CPU training path of ``hrnet_jax.fast_conv`` (a fusion-safe ReLU and a
matrix-product 1x1 weight gradient); the models set it from ``config.model.fast_path``. It
changes neither the parameters nor, beyond float32 rounding, the results.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from hrnet_jax import fast_conv

Dtype = Any

# The official code initialises convolutions with N(0, 0.001) and BatchNorm with (1, 0).
conv_init = nn.initializers.normal(stddev=0.001)

BN_MOMENTUM = 0.9  # flax's momentum is 1 - torch's (the official BN_MOMENTUM = 0.1).
BN_EPSILON = 1e-5  # torch's default.


def conv(features: int, kernel: int, stride: int = 1, *, dtype: Dtype, name: str,
         use_bias: bool = False, fast: bool = False) -> nn.Conv:
  """A torch-style convolution: symmetric padding kernel // 2, float32 parameters."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=use_bias, dtype=dtype,
                 param_dtype=jnp.float32, kernel_init=conv_init, name=name,
                 conv_general_dilated=fast_conv.conv_general_dilated if fast else None)


def relu(x: jnp.ndarray, fast: bool = False) -> jnp.ndarray:
  """``nn.relu``, or on the fast path the same values as a select XLA:CPU computes once."""
  return fast_conv.relu(x) if fast else nn.relu(x)


def batch_norm(train: bool, *, dtype: Dtype, name: str) -> nn.BatchNorm:
  """BatchNorm with the official momentum and epsilon; batch statistics when training."""
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                      epsilon=BN_EPSILON, use_fast_variance=False, dtype=dtype,
                      param_dtype=jnp.float32, name=name)


def shortcut(x: jnp.ndarray, features: int, stride: int, train: bool, dtype: Dtype,
             fast: bool = False) -> jnp.ndarray:
  """Identity, or the official ``downsample`` (1x1 conv + BN) when the shape changes.

  Called from a block's compact method, so ``downsample_0``/``downsample_1`` are its children.
  """
  if stride == 1 and x.shape[-1] == features:
    return x
  x = conv(features, 1, stride, dtype=dtype, name='downsample_0', fast=fast)(x)
  return batch_norm(train, dtype=dtype, name='downsample_1')(x)


class BasicBlock(nn.Module):
  """Two 3x3 conv + BN layers with an identity (or 1x1 projection) shortcut."""
  planes: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  fast: bool = False
  expansion = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    bn = functools.partial(batch_norm, train, dtype=self.dtype)
    cv = functools.partial(conv, dtype=self.dtype, fast=self.fast)
    y = cv(self.planes, 3, self.stride, name='conv1')(x)
    y = relu(bn(name='bn1')(y), self.fast)
    y = bn(name='bn2')(cv(self.planes, 3, name='conv2')(y))
    residual = shortcut(x, self.planes * self.expansion, self.stride, train, self.dtype, self.fast)
    return relu(y + residual, self.fast)


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3, 1x1 expand (x4) conv + BN layers with a residual shortcut."""
  planes: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  fast: bool = False
  expansion = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    bn = functools.partial(batch_norm, train, dtype=self.dtype)
    cv = functools.partial(conv, dtype=self.dtype, fast=self.fast)
    y = relu(bn(name='bn1')(cv(self.planes, 1, name='conv1')(x)), self.fast)
    y = relu(bn(name='bn2')(cv(self.planes, 3, self.stride, name='conv2')(y)), self.fast)
    y = bn(name='bn3')(cv(self.planes * self.expansion, 1, name='conv3')(y))
    residual = shortcut(x, self.planes * self.expansion, self.stride, train, self.dtype, self.fast)
    return relu(y + residual, self.fast)


BLOCKS = {'BASIC': BasicBlock, 'BOTTLENECK': Bottleneck}
