"""Heatmaps to keypoints as the official ``get_final_preds``, DARK, UDP, and the flip-test merge.

Heatmaps are NHWC (the official code is NCHW). The heatmap-level steps run in jnp and jit on
the device; DARK and UDP refine on the host (numpy and cv2, as their reference code); the map
back to image pixels runs in float64 numpy, as the official ``transform_preds``.
"""

from __future__ import annotations

from typing import Callable, Sequence

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


def _stack_last(arrays: Sequence[jax.Array]) -> jax.Array:
  """``jnp.stack(arrays, axis=-1)`` as a concatenate (jax2onnx 0.12 has no ``stack``)."""
  return jnp.concatenate([a[..., None] for a in arrays], axis=-1)


def argmax_coordinates(heatmaps) -> tuple[jax.Array, jax.Array]:
  """The official ``get_max_preds``: (N, K, 2) float32 x, y of each maximum and (N, K) maxvals.

  Joints whose maximum is not above 0 get (0, 0).
  """
  n, h, w, k = heatmaps.shape
  flat = jnp.moveaxis(jnp.asarray(heatmaps, jnp.float32), 3, 1).reshape(n, k, h * w)
  index = jnp.argmax(flat, axis=-1)
  maxvals = jnp.max(flat, axis=-1)
  # Truncating division (= floor: index >= 0) and no remainder: jnp's // and % lower to rem,
  # which jax2onnx 0.12 cannot convert with a dynamic batch (export.py).
  row = jax.lax.div(index, jnp.asarray(w, index.dtype))
  coords = _stack_last([index - row * w, row]).astype(jnp.float32)
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

  diff = _stack_last([at(pyc, pxc + 1) - at(pyc, pxc - 1), at(pyc + 1, pxc) - at(pyc - 1, pxc)])
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


def _gaussian_blur(maps: np.ndarray, kernel: int) -> np.ndarray:
  """mmpose 1.x ``gaussian_blur`` of (M, H, W) float32 maps: each map zero-padded by
  (kernel - 1) / 2, blurred by cv2 (sigma from the kernel size), cropped and rescaled to its
  own maximum, all in float32. A map whose blur has maximum 0 (an all-zero map) comes out
  nan, as in mmpose."""
  border = (kernel - 1) // 2
  out = np.empty_like(maps)
  with np.errstate(divide='ignore', invalid='ignore'):
    for m in range(len(maps)):
      origin_max = np.max(maps[m])
      padded = np.zeros((maps.shape[1] + 2 * border, maps.shape[2] + 2 * border), np.float32)
      padded[border:-border, border:-border] = maps[m]
      out[m] = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
      out[m] *= origin_max / np.max(out[m])
  return out


def udp_coordinates(heatmaps, coords, maxvals, blur_kernel: int = 11) -> np.ndarray:
  """UDP decoding (Huang et al., CVPR 2020) in heatmap pixels, as mmpose 1.x: (N, K, 2) float32.

  mmpose 1.x ``UDPHeatmap.decode`` (gaussian): ``get_heatmap_maximum`` (``coords``, the
  argmax of ``argmax_coordinates``; a joint whose ``maxvals`` is not above 0 starts at
  (-1, -1)), then ``refine_keypoints_dark_udp``: the DARK blur of ``_gaussian_blur``
  (zero border, rescaled to the map's maximum), clipped to [1e-3, 50], log, padded by one
  pixel (edge), and one Newton step -(H + eps I)^-1 grad of central differences at the
  integer maximum, for every joint (no border condition; mmpose's flat indices, wrap-around
  included). float32 as mmpose (the inverse and the step in float64). Where the step is not
  finite (an all-zero heatmap: 0/0 in the rescale, nan in mmpose) the joint keeps its start.

  mmpose 0.x (``post_dark_udp`` in ``mmpose/core/evaluation/top_down_eval.py``) differs in
  the blur only: it blurs each heatmap in place with cv2's default (reflected) border, no
  zero padding and no rescale to the original maximum. This follows 1.x, the maintained one.
  """
  heatmaps = np.asarray(heatmaps, np.float32)
  n, h, w, k = heatmaps.shape
  start = np.where((np.asarray(maxvals) > 0)[..., None], np.asarray(coords, np.float32),
                   np.float32(-1.0)).astype(np.float32)
  maps = np.ascontiguousarray(np.moveaxis(heatmaps, 3, 1)).reshape(n * k, h, w)
  blurred = _gaussian_blur(maps, blur_kernel)
  np.clip(blurred, 1e-3, 50., blurred)
  np.log(blurred, blurred)
  flat = np.pad(blurred, ((0, 0), (1, 1), (1, 1)), mode='edge').reshape(n, -1)
  size = flat.shape[1]  # one person's K padded maps, as mmpose flattens them
  index = start[..., 0] + 1 + (start[..., 1] + 1) * (w + 2)
  index = (index + (w + 2) * (h + 2) * np.arange(k)).astype(int)  # (N, K)

  def at(offset):  # mmpose's heatmaps_pad[index + offset]: a negative index wraps around
    return np.take_along_axis(flat, (index + offset) % size, axis=1)[..., None]

  i_, ix1, iy1, ix1y1 = at(0), at(1), at(w + 2), at(w + 3)
  ix1_y1_, ix1_, iy1_ = at(-w - 3), at(-1), at(-2 - w)
  dx = 0.5 * (ix1 - ix1_)
  dy = 0.5 * (iy1 - iy1_)
  derivative = np.concatenate([dx, dy], axis=-1)[..., None]  # (N, K, 2, 1)
  dxx = ix1 - 2 * i_ + ix1_
  dyy = iy1 - 2 * i_ + iy1_
  dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
  hessian = np.concatenate([dxx, dxy, dxy, dyy], axis=-1).reshape(n, k, 2, 2)
  with np.errstate(invalid='ignore'):
    hessian = np.linalg.inv(hessian + np.finfo(np.float32).eps * np.eye(2))
    step = np.einsum('...mn,...nk->...mk', hessian, derivative)[..., 0]
    refined = (start - step).astype(np.float32)
  return np.where(np.isfinite(refined), refined, start)


def udp_to_image_coordinates(coords, center, scale, heatmap_size: Sequence[int],
                             pixel_std: float = kp.PIXEL_STD) -> np.ndarray:
  """UDP's heatmap (x, y) to image pixels, float64: mmpose 1.x's map of ``UDPHeatmap.decode``
  (x / (W - 1) * input width) then of the top-down estimator (x / input width * box width +
  center - box width / 2), per axis: x / (W - 1) * box + center - box / 2, box = scale x
  pixel_std (x by ``scale[0]``, y by ``scale[1]``, as ``get_udp_warp_matrix``). mmpose 0.x's
  ``transform_preds(use_udp=True)`` is the same map."""
  coords = np.asarray(coords, np.float64)
  center = np.asarray(center, np.float64)[:, None, :]
  box = (np.asarray(scale, np.float64) * pixel_std)[:, None, :]
  size = np.asarray(heatmap_size, np.float64)  # (w, h)
  return coords / (size - 1.0) * box + center - 0.5 * box


DECODERS = ('official', 'dark', 'udp')
HOST_DECODERS = ('dark', 'udp')  # refine on the host from the heatmaps


def check_decoder(decoder: str) -> None:
  """Raises ``errors.UserError`` unless ``decoder`` is one of ``DECODERS``."""
  if decoder not in DECODERS:
    raise errors.UserError(f'decoder {decoder!r}: expected one of {DECODERS}')


def check_blur_kernel(blur_kernel) -> None:
  """Raises ``errors.ConfigError`` unless the DARK / UDP blur kernel is an odd int >= 3."""
  if isinstance(blur_kernel, bool) or not isinstance(blur_kernel, (int, np.integer)) or (
      blur_kernel < 3 or blur_kernel % 2 == 0):
    raise errors.ConfigError(f'config.test.blur_kernel must be an odd integer >= 3 (the '
                             f'DARK / UDP blur, 11 for sigma 2); got {blur_kernel!r}')


def heatmap_coordinates(heatmaps, post_process: bool = True) -> tuple[jax.Array, jax.Array]:
  """Heatmap-pixel (x, y) of each joint and its maxval (jittable): argmax, quarter offset."""
  coords, maxvals = argmax_coordinates(heatmaps)
  if post_process:
    coords = quarter_offset(heatmaps, coords)
  return coords, maxvals


def image_coordinates(coords, maxvals, center, scale, heatmap_size: Sequence[int],
                      decoder: str = 'official', heatmaps=None,
                      blur_kernel: int = 11) -> np.ndarray:
  """(N, K, 2) float64 image x, y of ``heatmap_coordinates``' output, by ``decoder``.

  'official': ``coords`` (argmax, quarter offset) through ``to_image_coordinates``; 'dark':
  DARK on the argmax, the same map; 'udp': ``udp_coordinates`` and
  ``udp_to_image_coordinates``. DARK and UDP need the (N, H, W, K) ``heatmaps``.
  """
  if decoder == 'udp':
    refined = udp_coordinates(heatmaps, coords, maxvals, blur_kernel)
    return udp_to_image_coordinates(refined, center, scale, heatmap_size)
  if decoder == 'dark':
    coords = dark_coordinates(heatmaps, coords, blur_kernel)
  return to_image_coordinates(np.asarray(coords), center, scale, heatmap_size)


def heatmaps_to_keypoints(heatmaps_nhwc, center, scale, post_process: bool = True,
                          decoder: str = 'official',
                          blur_kernel: int = 11) -> tuple[np.ndarray, np.ndarray]:
  """The official ``get_final_preds``: (N, K, 2) image coordinates and (N, K, 1) maxvals.

  ``decoder='dark'`` replaces the quarter offset with DARK; ``decoder='udp'`` decodes and
  maps back as mmpose 1.x's UDP (for heatmaps of UDP crops); ``blur_kernel`` is their blur.
  """
  check_decoder(decoder)
  heatmaps = jnp.asarray(heatmaps_nhwc)
  coords, maxvals = heatmap_coordinates(heatmaps, post_process and decoder == 'official')
  h, w = heatmaps.shape[1:3]
  host = np.asarray(heatmaps) if decoder in HOST_DECODERS else None
  image = image_coordinates(coords, np.asarray(maxvals), center, scale, (w, h), decoder,
                            host, blur_kernel)
  return image, np.asarray(maxvals)[..., None]


def crop_outputs_function(config) -> Callable[[Callable[[jax.Array], jax.Array], jax.Array],
                                              dict]:
  """``outputs(network, crops)``: the test of ``config`` on a batch of normalised crops:
  ``network``'s heatmaps, the flip-test merge and argmax decoding (jittable), as
  {'coords', 'maxvals'} and, with the DARK or UDP decoder, the merged 'heatmaps' (they refine
  on the host, as their reference code). ``export.py`` exports the same function.
  """
  test = config.test
  check_decoder(test.decoder)
  check_blur_kernel(test.blur_kernel)
  if test.decoder == 'udp' and test.flip_test and test.shift_heatmap:
    raise errors.ConfigError(
        "config.test.decoder='udp' flips without the one-pixel shift (UDP's flip is exact, "
        "as mmpose's UDP recipes): set config.test.shift_heatmap=False")
  pairs = kp.from_config(config).flip_pairs if test.flip_test else ()

  def outputs(network, images):
    heatmaps = network(images).astype(jnp.float32)
    if test.flip_test:
      flipped = network(images[:, :, ::-1])
      heatmaps = merge_flip_test(heatmaps, flipped.astype(jnp.float32), pairs,
                                        shift=test.shift_heatmap)
    coords, maxvals = heatmap_coordinates(
        heatmaps, test.post_process and test.decoder == 'official')
    out = {'coords': coords, 'maxvals': maxvals}
    if test.decoder in HOST_DECODERS:
      out['heatmaps'] = heatmaps
    return out

  return outputs
