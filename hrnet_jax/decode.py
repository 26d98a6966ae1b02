"""Heatmaps to keypoints as the official ``get_final_preds``, DARK, and the flip-test merge.

Heatmaps are NHWC (the official code is NCHW). The heatmap-level steps run in jnp and jit on
the device; the map back to image pixels runs in float64 numpy, as the official
``transform_preds``.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax import errors
from hrnet_jax import keypoints as kp


def merge_flip_test(heatmaps, heatmaps_of_flipped_input, flip_pairs: Sequence[Sequence[int]],
                    shift: bool = True):
  """The official flip test: flip back (mirror x, swap left/right), shift one pixel, average.

  ``shift`` is the official SHIFT_HEATMAP: column x of the flipped-back heatmap moves to x + 1
  (column 0 keeps its value).
  """
  num_joints = heatmaps.shape[-1]
  perm = kp.flip_permutation(num_joints, flip_pairs)
  back = jnp.asarray(heatmaps_of_flipped_input)[:, :, ::-1, :][..., perm]
  if shift:
    back = jnp.concatenate([back[:, :, :1], back[:, :, :-1]], axis=2)
  return (jnp.asarray(heatmaps) + back) * 0.5


def argmax_coordinates(heatmaps) -> tuple[jax.Array, jax.Array]:
  """The official ``get_max_preds``: (N, K, 2) float32 x, y of each maximum and (N, K) maxvals.

  Joints whose maximum is not above 0 get (0, 0).
  """
  n, h, w, k = heatmaps.shape
  flat = jnp.moveaxis(jnp.asarray(heatmaps, jnp.float32), 3, 1).reshape(n, k, h * w)
  index = jnp.argmax(flat, axis=-1)
  maxvals = jnp.max(flat, axis=-1)
  coords = jnp.stack([index % w, index // w], axis=-1).astype(jnp.float32)
  return coords * (maxvals > 0)[..., None], maxvals


def quarter_offset(heatmaps, coords) -> jax.Array:
  """The official post-processing: a quarter pixel toward the higher neighbour, per axis.

  Only where 1 < px < W - 1 and 1 < py < H - 1 (px, py the rounded coordinates), as the
  official code.
  """
  n, h, w, k = heatmaps.shape
  hm = jnp.moveaxis(jnp.asarray(heatmaps, jnp.float32), 3, 1)  # (N, K, H, W)
  px = jnp.floor(coords[..., 0] + 0.5).astype(jnp.int32)
  py = jnp.floor(coords[..., 1] + 0.5).astype(jnp.int32)
  inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
  pxc, pyc = jnp.clip(px, 1, w - 2), jnp.clip(py, 1, h - 2)

  def at(y, x):
    return jnp.take_along_axis(hm.reshape(n, k, h * w), (y * w + x)[..., None], axis=-1)[..., 0]

  diff = jnp.stack([at(pyc, pxc + 1) - at(pyc, pxc - 1), at(pyc + 1, pxc) - at(pyc - 1, pxc)],
                   axis=-1)
  return coords + jnp.where(inside[..., None], jnp.sign(diff) * 0.25, 0.0)


def to_image_coordinates(coords, center, scale, heatmap_size: Sequence[int],
                         pixel_std: float = kp.PIXEL_STD) -> np.ndarray:
  """The official ``transform_preds``: heatmap (x, y) to image pixels, float64.

  As the official inverse affine transform without rotation, both axes use ``scale[0]``.
  """
  coords = np.asarray(coords, np.float64)
  center = np.asarray(center, np.float64)[:, None, :]
  scale = np.asarray(scale, np.float64)
  size = np.asarray(heatmap_size, np.float64)  # (w, h)
  zoom = (scale[:, 0] * pixel_std / size[0])[:, None, None]
  return center + (coords - size / 2.0) * zoom


def dark_coordinates(heatmaps, coords, blur_kernel: int = 11) -> np.ndarray:
  """DARK (Zhang et al., CVPR 2020): a Newton step on the blurred log heatmap (numpy).

  As the authors' code: Gaussian blur (kernel 11, sigma from the kernel) rescaled to the
  original maximum, log of max(h, 1e-10), then offset = -H^-1 grad at the integer maximum,
  where 1 < px < W - 2 and 1 < py < H - 2 and the Hessian is invertible.
  """
  heatmaps = np.asarray(heatmaps, np.float64)
  coords = np.array(coords, np.float64)
  n, h, w, k = heatmaps.shape
  border = (blur_kernel - 1) // 2
  for i in range(n):
    for j in range(k):
      hm = heatmaps[i, :, :, j]
      peak = hm.max()
      padded = np.zeros((h + 2 * border, w + 2 * border))
      padded[border:-border, border:-border] = hm
      blurred = cv2.GaussianBlur(padded, (blur_kernel, blur_kernel), 0)[border:-border,
                                                                         border:-border]
      blurred = blurred * (peak / blurred.max())
      lg = np.log(np.maximum(blurred, 1e-10))
      px, py = int(coords[i, j, 0]), int(coords[i, j, 1])
      if 1 < px < w - 2 and 1 < py < h - 2:
        dx = 0.5 * (lg[py, px + 1] - lg[py, px - 1])
        dy = 0.5 * (lg[py + 1, px] - lg[py - 1, px])
        dxx = 0.25 * (lg[py, px + 2] - 2 * lg[py, px] + lg[py, px - 2])
        dxy = 0.25 * (lg[py + 1, px + 1] - lg[py - 1, px + 1] - lg[py + 1, px - 1] +
                      lg[py - 1, px - 1])
        dyy = 0.25 * (lg[py + 2, px] - 2 * lg[py, px] + lg[py - 2, px])
        det = dxx * dyy - dxy**2
        if det != 0:
          hessian_inv = np.array([[dyy, -dxy], [-dxy, dxx]]) / det
          coords[i, j] -= hessian_inv @ np.array([dx, dy])
  return coords


DECODERS = ('official', 'dark')


def check_decoder(decoder: str) -> None:
  """Raises ``errors.UserError`` unless ``decoder`` is one of ``DECODERS``."""
  if decoder not in DECODERS:
    raise errors.UserError(f'decoder {decoder!r}: expected one of {DECODERS}')


def heatmap_coordinates(heatmaps, post_process: bool = True) -> tuple[jax.Array, jax.Array]:
  """Heatmap-pixel (x, y) of each joint and its maxval (jittable): argmax, quarter offset."""
  coords, maxvals = argmax_coordinates(heatmaps)
  if post_process:
    coords = quarter_offset(heatmaps, coords)
  return coords, maxvals


def heatmaps_to_keypoints(heatmaps_nhwc, center, scale, post_process: bool = True,
                          decoder: str = 'official') -> tuple[np.ndarray, np.ndarray]:
  """The official ``get_final_preds``: (N, K, 2) image coordinates and (N, K, 1) maxvals.

  ``decoder='dark'`` replaces the quarter offset with DARK.
  """
  check_decoder(decoder)
  heatmaps = jnp.asarray(heatmaps_nhwc)
  coords, maxvals = heatmap_coordinates(heatmaps, post_process and decoder == 'official')
  if decoder == 'dark':
    coords = dark_coordinates(heatmaps, coords)
  h, w = heatmaps.shape[1:3]
  image = to_image_coordinates(np.asarray(coords), center, scale, (w, h))
  return image, np.asarray(maxvals)[..., None]
