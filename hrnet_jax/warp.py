"""Bilinear affine warps on the device: the eval warp of ``input_pipeline.transforms``, batched.

``transforms.warp_image`` (TF, on the host) is cv2's ``warpAffine`` with a zero border: each
output pixel samples the image at the float32 inverse matrix applied to its coordinates, blends
its four neighbours in float32 and rounds to whole grey levels (cv2 writes uint8). Evaluation and
prediction warp without rotation, so every output column samples one image x and every output row
one image y. The host computes those two short vectors from the same float32 inverse as the TF
warp (the multiply-add rounded once); ``warp`` gathers and blends on the device, for a batch of
images zero-padded to one size, as one traceable function that callers jit or ``shard_map``.

Against the TF warp (tests/test_eval_devices.py): equal bit for bit on the inputs of bottom-up
evaluation; on top-down crops a few values in 10^5 are one grey level apart, where TF's XLA
rounds the multiply and the add of a sample coordinate separately (it does so for some output
widths only; the device here rounds once, as TF does for the others).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax import keypoints as kp
from input_pipeline import transforms

# Images are padded to multiples of this many pixels: a bounded set of shapes to compile for.
PAD_MULTIPLE = 64

# ``transforms.normalize`` of every grey level (256, 3), by numpy's correctly rounded float32
# division: XLA's division on a CPU can be one ulp off, so the device looks the values up.
_NORMALIZED = ((np.arange(256, dtype=np.float32)[:, None] -
                np.asarray(transforms.IMAGENET_MEAN, np.float32) * np.float32(255.0)) /
               (np.asarray(transforms.IMAGENET_STD, np.float32) * np.float32(255.0)))


def affine_matrices(centers, scales, output_size: Sequence[int],
                    pixel_std: float = kp.PIXEL_STD) -> np.ndarray:
  """(N, 2, 3) float64 image -> output matrices: ``transforms.affine_matrix`` at rotation 0.

  ``centers`` and ``scales`` are (N, 2) (scale = box size / pixel_std); the numbers are those
  of the TF function, bit for bit.
  """
  centers = np.asarray(centers, np.float64).reshape(-1, 2)
  scales = np.asarray(scales, np.float64).reshape(-1, 2)
  out_w, out_h = float(output_size[0]), float(output_size[1])
  zoom = out_w / (scales[:, 0] * pixel_std)
  matrices = np.zeros((len(centers), 2, 3), np.float64)
  matrices[:, 0, 0] = matrices[:, 1, 1] = zoom
  matrices[:, 1, 0] = -0.0  # -sin(0), as the TF function
  matrices[:, 0, 2] = out_w * 0.5 - zoom * centers[:, 0]
  matrices[:, 1, 2] = out_h * 0.5 - zoom * centers[:, 1]
  return matrices


def udp_affine_matrices(centers, scales, output_size: Sequence[int],
                        pixel_std: float = kp.PIXEL_STD) -> np.ndarray:
  """(N, 2, 3) float64 image -> output matrices of UDP: ``transforms.udp_affine_matrix`` at
  rotation 0 (mmpose's ``get_udp_warp_matrix``), bit for bit.

  The box (scale x pixel_std) maps onto the output's pixel centres 0 .. size - 1: x by
  (w - 1) / box width, y by (h - 1) / box height, the box center to ((w - 1) / 2, (h - 1) / 2).
  """
  centers = np.asarray(centers, np.float64).reshape(-1, 2)
  boxes = np.asarray(scales, np.float64).reshape(-1, 2) * pixel_std
  out_w, out_h = float(output_size[0]), float(output_size[1])
  zoom_x, zoom_y = (out_w - 1.0) / boxes[:, 0], (out_h - 1.0) / boxes[:, 1]
  matrices = np.zeros((len(centers), 2, 3), np.float64)
  matrices[:, 0, 0], matrices[:, 1, 1] = zoom_x, zoom_y
  matrices[:, 0, 1] = -0.0  # -sin(0) x zoom, as the TF function
  matrices[:, 0, 2] = zoom_x * (-centers[:, 0] + 0.5 * boxes[:, 0])
  matrices[:, 1, 2] = zoom_y * (-centers[:, 1] + 0.5 * boxes[:, 1])
  return matrices


def sample_coordinates(matrices: np.ndarray,
                       output_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """Where each output column and row samples the image: xs (N, w) and ys (N, h), float32.

  ``matrices`` (N, 2, 3) map image to output pixels without rotation. The inverse is
  ``np.linalg.inv`` cast to float32, the TF warp's inverse bit for bit; a coordinate is
  a * i + c of its float32 entries, rounded once to float32.
  """
  matrices = np.asarray(matrices, np.float64).reshape(-1, 2, 3)
  full = np.zeros((len(matrices), 3, 3), np.float64)
  full[:, :2], full[:, 2, 2] = matrices, 1.0
  inverse = np.linalg.inv(full)[:, :2].astype(np.float32)
  if np.any(inverse[:, 0, 1] != 0) or np.any(inverse[:, 1, 0] != 0):
    raise ValueError('sample_coordinates takes warps without rotation')

  def along(row: int, n: int) -> np.ndarray:
    # float32 a and c, so a * i is exact in float64 and a * i + c rounds once, to float32.
    return (inverse[:, row, row, None].astype(np.float64) * np.arange(n) +
            inverse[:, row, 2, None].astype(np.float64)).astype(np.float32)
  return along(0, int(output_size[0])), along(1, int(output_size[1]))


def padded_shape(shapes: Sequence[Sequence[int]]) -> tuple[int, int]:
  """(H, W) that images of these (height, width) shapes are padded to: the largest sides,
  rounded up to ``PAD_MULTIPLE``."""
  return tuple(-(-max(int(s[i]) for s in shapes) // PAD_MULTIPLE) * PAD_MULTIPLE
               for i in (0, 1))


def pad_images(images: Sequence[np.ndarray], count: int | None = None,
               shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Images (H, W, C) uint8 zero-padded into one (count, H', W', C) array, and their (height,
  width) sizes (count, 2) int32.

  (H', W') is ``shape`` or ``padded_shape`` of the images; rows past the images are zeros of
  size (0, 0).
  """
  count = len(images) if count is None else count
  shape = padded_shape([im.shape for im in images]) if shape is None else shape
  channels = images[0].shape[2]
  stack = np.zeros((count, *shape, channels), np.uint8)
  sizes = np.zeros((count, 2), np.int32)
  for i, image in enumerate(images):
    stack[i, :image.shape[0], :image.shape[1]] = image
    sizes[i] = image.shape[:2]
  return stack, sizes


def warp(images: jax.Array, sizes: jax.Array, xs: jax.Array, ys: jax.Array,
         image_index: jax.Array | None = None) -> jax.Array:
  """(N, h, w, C) float32 whole grey levels: ``transforms.warp_image`` on the device.

  images (M, H, W, C) uint8 zero-padded, their real (height, width) ``sizes`` (M, 2); output
  n samples image ``image_index[n]`` (default n) at columns ``xs`` (N, w) and rows ``ys``
  (N, h) (``sample_coordinates``). A tap outside the real image reads 0 (cv2's border).
  """
  if image_index is None:
    image_index = jnp.arange(xs.shape[0])
  return jax.vmap(_warp_one, in_axes=(None, None, 0, 0, 0))(images, sizes, image_index, xs, ys)


def _warp_one(images, sizes, index, xs, ys):
  """One output of ``warp``: image ``index`` at (w,) columns xs and (h,) rows ys."""
  height, width = sizes[index, 0], sizes[index, 1]
  x0, y0 = jnp.floor(xs), jnp.floor(ys)
  fx, fy = (xs - x0)[None, :, None], (ys - y0)[:, None, None]
  # Clip far-away taps before the int cast, as the TF warp.
  x0 = jnp.clip(x0, -2.0, width.astype(jnp.float32)).astype(jnp.int32)
  y0 = jnp.clip(y0, -2.0, height.astype(jnp.float32)).astype(jnp.int32)
  last_y, last_x = images.shape[1] - 1, images.shape[2] - 1

  def taps(y):
    rows = images[index, jnp.clip(y, 0, last_y)]  # (h, W, C): the rows first, then columns
    row_in = (y >= 0) & (y < height)
    out = []
    for x in (x0, x0 + 1):
      inside = (row_in[:, None] & (x >= 0)[None, :] & (x < width)[None, :])[..., None]
      out.append(rows[:, jnp.clip(x, 0, last_x)].astype(jnp.float32) *
                 inside.astype(jnp.float32))
    return out

  (t0, t1), (t2, t3) = taps(y0), taps(y0 + 1)
  top = t0 + fx * (t1 - t0)
  low = t2 + fx * (t3 - t2)
  return jnp.round(top + fy * (low - top))


def normalize(images: jax.Array) -> jax.Array:
  """Whole RGB grey levels (``warp``'s output) to ImageNet-normalised float32, bit for bit
  ``transforms.normalize``."""
  levels = jnp.clip(images, 0, 255).astype(jnp.int32)
  return jnp.asarray(_NORMALIZED)[levels, jnp.arange(_NORMALIZED.shape[1])]
