"""The CPU training path: a convolution with a cheaper weight gradient, and a fusion-safe ReLU.

Two things make XLA:CPU's HRNet train step slow (docs/benchmarks.md, "CPU train step"):

- ``max(x, 0)`` is "effectively unary" to XLA's fusion pass, so it may be duplicated into every
  consumer, and the add feeding it then follows. Through HRNet's chains of residual adds and
  branch sums, every fusion that reads a block output recomputes all the blocks before it, in
  the forward pass and again in the transposes of the backward pass. ``relu`` below is a
  select on ``x <= 0``: the same values and the same gradient, but two full-size operands,
  so XLA materialises it once.
- XLA builds the weight gradient of a 1x1 convolution as a convolution whose window is the
  whole image, which YNNPACK (XLA:CPU's convolution library) runs at a few GFLOP/s. It is a
  matrix product: ``x^T @ dy`` over the batch and pixels.

``conv_general_dilated`` is a drop-in for ``lax.conv_general_dilated`` as ``flax.linen.Conv``
calls it (its ``conv_general_dilated`` field), so parameters and their names do not change.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
from jax import lax
import jax.numpy as jnp

NHWC = ('NHWC', 'HWIO', 'NHWC')


def relu(x: jnp.ndarray) -> jnp.ndarray:
  """ReLU as ``where(x <= 0, 0, x)``: the values (NaN too) and gradient of ``nn.relu``."""
  return jnp.where(x <= 0, jnp.zeros((), x.dtype), x)


def _is_nhwc(dimension_numbers: Any) -> bool:
  """Whether ``dimension_numbers`` are flax's NHWC / HWIO / NHWC for a 2-D convolution."""
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return dimension_numbers == lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), NHWC)
  return tuple(dimension_numbers or ()) == NHWC


def conv_general_dilated(lhs: jnp.ndarray, rhs: jnp.ndarray, window_strides: Sequence[int],
                         padding: Any, lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision: Any = None,
                         preferred_element_type: Any = None) -> jnp.ndarray:
  """``lax.conv_general_dilated`` whose 1x1 weight gradient is a matrix product.

  Only undilated, ungrouped NHWC/HWIO 1x1 convolutions with explicit padding take the custom
  gradient; anything else is ``lax.conv_general_dilated`` itself.
  """
  kernel_hw = rhs.shape[:2]
  plain = (lhs.ndim != 4 or not _is_nhwc(dimension_numbers) or kernel_hw != (1, 1)
           or isinstance(padding, str) or tuple(map(tuple, padding)) != ((0, 0), (0, 0))
           or any(d != 1 for d in (lhs_dilation or (1, 1)))
           or any(d != 1 for d in (rhs_dilation or (1, 1)))
           or feature_group_count != 1 or batch_group_count != 1
           or preferred_element_type is not None)
  if plain:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
  return _conv1x1(lhs, rhs, tuple(window_strides), precision)


def _xla_conv1x1(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int],
                 precision: Any) -> jnp.ndarray:
  """The plain convolution (forward and input gradient of ``_conv1x1``)."""
  return lax.conv_general_dilated(x, w, strides, ((0, 0), (0, 0)), dimension_numbers=NHWC,
                                  precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv1x1(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int],
             precision: Any) -> jnp.ndarray:
  return _xla_conv1x1(x, w, strides, precision)


def _conv1x1_fwd(x, w, strides, precision):
  return _xla_conv1x1(x, w, strides, precision), (x, w)


def _conv1x1_bwd(strides, precision, residuals, g):
  x, w = residuals
  _, input_vjp = jax.vjp(lambda x: _xla_conv1x1(x, w, strides, precision), x)
  (dx,) = input_vjp(g)
  sampled = x[:, ::strides[0], ::strides[1], :]  # the pixels the 1x1 kernel read
  dw = lax.dot_general(sampled, g, (((0, 1, 2), (0, 1, 2)), ((), ())), precision=precision,
                       preferred_element_type=jnp.float32)
  return dx, dw.astype(w.dtype).reshape(w.shape)


_conv1x1.defvjp(_conv1x1_fwd, _conv1x1_bwd)
