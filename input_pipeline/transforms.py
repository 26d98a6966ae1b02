"""Top-down sample transforms as TF ops: image decoding, affine warps, flips, half body,
heatmap targets.

Each function follows one function of the official ``JointsDataset``/``transforms.py`` (the
UDP ones, ``udp_affine_matrix`` and ``udp_gaussian_targets``, follow mmpose 1.x) and works
eagerly and inside ``tf.data`` (no Python per-sample code for JPEGs). Sizes are
(width, height) as in the official configs; images are HWC; keypoints are (K, 3) rows of x, y,
visibility.

Images are read as the official ``cv2.imread(path, IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION)``
converted to RGB, everywhere (training, evaluation, the demo): JPEGs by TF with libjpeg's
accurate integer IDCT, which is cv2's (TF's default IDCT differs from it by up to 19 grey
levels on real photos), other formats by cv2 itself. EXIF orientation is ignored.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np
import tensorflow as tf

from hrnet_jax import keypoints as kp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# libjpeg's JDCT_ISLOW, the IDCT cv2 decodes with: equal to cv2 bit for bit on real photos.
JPEG_DCT_METHOD = 'INTEGER_ACCURATE'


def _f64(x) -> tf.Tensor:
  return tf.cast(tf.convert_to_tensor(x), tf.float64)


def affine_matrix(center, scale, rotation, output_size: Sequence[int],
                  inverse: bool = False, pixel_std: float = kp.PIXEL_STD) -> tf.Tensor:
  """The official ``get_affine_transform`` as a (2, 3) float64 matrix (image -> output).

  Rotation in degrees; only ``scale[0]`` (the box width / pixel_std) sets the zoom, as in
  the official code. ``inverse`` gives the output -> image matrix.
  """
  center, scale = _f64(center), _f64(scale)
  out_w, out_h = float(output_size[0]), float(output_size[1])
  angle = _f64(rotation) * (math.pi / 180.0)
  zoom = out_w / (scale[0] * pixel_std)
  cos, sin = tf.cos(angle), tf.sin(angle)
  out_center = tf.constant([out_w * 0.5, out_h * 0.5], tf.float64)
  if inverse:
    linear = tf.stack([tf.stack([cos, -sin]), tf.stack([sin, cos])]) / zoom
    offset = center - tf.linalg.matvec(linear, out_center)
  else:
    linear = zoom * tf.stack([tf.stack([cos, sin]), tf.stack([-sin, cos])])
    offset = out_center - tf.linalg.matvec(linear, center)
  return tf.concat([linear, offset[:, None]], axis=1)


def udp_affine_matrix(center, scale, rotation, output_size: Sequence[int],
                      pixel_std: float = kp.PIXEL_STD) -> tf.Tensor:
  """mmpose's ``get_udp_warp_matrix`` (UDP, Huang et al. CVPR 2020) as a (2, 3) float64 matrix.

  Image -> output, the box (scale x pixel_std) onto the output's pixel centres 0 .. size - 1:
  x zoomed by (w - 1) / box width and y by (h - 1) / box height (not one zoom from the width,
  as ``affine_matrix``), the box center to ((w - 1) / 2, (h - 1) / 2). Rotation in degrees,
  in mmpose's UDP sense: the opposite turn of ``affine_matrix`` (and of mmpose's
  ``get_warp_matrix``) at the same angle, which the symmetric random draw does not see.
  mmpose 0.x's ``get_warp_matrix`` (TopDownAffine use_udp) is the same matrix.
  """
  center, box = _f64(center), _f64(scale) * pixel_std
  out_w, out_h = float(output_size[0]), float(output_size[1])
  angle = _f64(rotation) * (math.pi / 180.0)
  cos, sin = tf.cos(angle), tf.sin(angle)
  zoom_x, zoom_y = (out_w - 1.0) / box[0], (out_h - 1.0) / box[1]
  return tf.stack([
      tf.stack([cos * zoom_x, -sin * zoom_x,
                zoom_x * (-center[0] * cos + center[1] * sin + 0.5 * box[0])]),
      tf.stack([sin * zoom_y, cos * zoom_y,
                zoom_y * (-center[0] * sin - center[1] * cos + 0.5 * box[1])])])


def crop_matrix(center, scale, rotation, output_size: Sequence[int],
                udp: bool = False) -> tf.Tensor:
  """The image -> crop matrix: ``udp_affine_matrix`` if ``udp``, else ``affine_matrix``."""
  if udp:
    return udp_affine_matrix(center, scale, rotation, output_size)
  return affine_matrix(center, scale, rotation, output_size)


def apply_affine(points, matrix) -> tf.Tensor:
  """Maps (..., 2) points through a (2, 3) affine matrix (float64)."""
  points, matrix = _f64(points), _f64(matrix)
  return tf.linalg.matvec(matrix[:, :2], points) + matrix[:, 2]


def _compose(outer, inner) -> tf.Tensor:
  """outer o inner for (2, 3) affine matrices."""
  bottom = tf.constant([[0.0, 0.0, 1.0]], tf.float64)
  full = tf.matmul(tf.concat([outer, bottom], 0), tf.concat([inner, bottom], 0))
  return full[:2]


def _inverse(matrix) -> tf.Tensor:
  bottom = tf.constant([[0.0, 0.0, 1.0]], tf.float64)
  return tf.linalg.inv(tf.concat([_f64(matrix), bottom], 0))[:2]


def _bucket_rows(n: tf.Tensor) -> tf.Tensor:
  """The smallest of 1024 x 2^(k/2) rows (rounded up to 1024) that holds ``n`` rows."""
  n = tf.cast(tf.maximum(n, 1024), tf.float64)
  half_octaves = tf.math.ceil(2.0 * tf.math.log(n) / math.log(2.0) - 1e-9)
  bucket = tf.pow(tf.constant(2.0, tf.float64), half_octaves / 2.0)
  return tf.cast(tf.math.ceil(tf.maximum(bucket, n) / 1024.0) * 1024.0, tf.int32)


@tf.function(jit_compile=True)
def _source_coordinates(inverse, out_w: int, out_h: int):
  """(2, h, w): where each output pixel samples the image (x then y), one XLA kernel."""
  xs = tf.range(out_w, dtype=tf.float32)[None, :]
  ys = tf.range(out_h, dtype=tf.float32)[:, None]
  return tf.stack([inverse[0, 0] * xs + (inverse[0, 1] * ys + inverse[0, 2]),
                   inverse[1, 0] * xs + (inverse[1, 1] * ys + inverse[1, 2])])


@tf.function(jit_compile=True)
def _bilinear_taps(source, height, width, origin):
  """Row-major indices (4, h, w) of each output pixel's four taps, their fractions and
  whether each tap lies inside the image (one XLA kernel).

  ``source`` comes in stored: computed in this kernel, XLA may evaluate it twice with
  different FMA contraction, and a floor of 131 could meet a fraction taken from 132.0.
  The image's pixel (0, 0) sits at ``origin`` (x, y: whole numbers) of ``source``'s frame.
  """
  x0, y0 = tf.floor(source[0]), tf.floor(source[1])
  fx, fy = source[0] - x0, source[1] - y0
  # Clip far-away taps before the int cast; a tap outside the image reads 0 (cv2's border).
  x0 = tf.cast(tf.clip_by_value(x0 - origin[0], -2.0, tf.cast(width, tf.float32)), tf.int32)
  y0 = tf.cast(tf.clip_by_value(y0 - origin[1], -2.0, tf.cast(height, tf.float32)), tf.int32)
  tap_x, tap_y = tf.stack([x0, x0 + 1, x0, x0 + 1]), tf.stack([y0, y0, y0 + 1, y0 + 1])
  inside = (tap_x >= 0) & (tap_x < width) & (tap_y >= 0) & (tap_y < height)
  index = (tf.clip_by_value(tap_y, 0, height - 1) * width +
           tf.clip_by_value(tap_x, 0, width - 1))
  return index, fx[..., None], fy[..., None], tf.cast(inside, tf.float32)[..., None]


@tf.function(jit_compile=True)
def _bilinear_blend(flat, index, fx, fy, inside):
  """Gathers the taps from the (rows, C) pixels and blends them (one XLA kernel).

  ``flat`` is the image row-major, padded to a bucket of sizes so that this compiles once
  per bucket, not once per image size.
  Separate from ``_bilinear_taps``: XLA:CPU fuses a gather with index arithmetic on
  run-time sizes poorly (2x slower than the two kernels).
  """
  taps = tf.cast(tf.gather(flat, index), tf.float32) * inside
  top = taps[0] + fx * (taps[1] - taps[0])
  low = taps[2] + fx * (taps[3] - taps[2])
  return tf.round(top + fy * (low - top))  # cv2 writes uint8


def warp_image(image, matrix, output_size: Sequence[int], origin=(0, 0)) -> tf.Tensor:
  """``cv2.warpAffine(image, matrix, output_size, flags=INTER_LINEAR)``, zero border, float32.

  ``matrix`` maps image to output pixels; pixel centres sit at integer coordinates, and a
  sample whose neighbours fall outside the image blends with 0, as cv2's constant border.
  Rounded to whole grey levels like cv2's uint8 output (then equal to it to within 0.001
  grey levels on average, on noise images too). Runs as three XLA kernels, compiled once
  per output size and bucket of image sizes (3x faster than TF kernels on a CPU).
  ``image`` may be a window of the image ``matrix`` maps, its top-left pixel at ``origin``
  (x, y); the result is then that of the whole image, bit for bit, if the window holds every
  pixel the warp reads.
  """
  image = tf.convert_to_tensor(image)
  shape = tf.shape(image)
  flat = tf.reshape(image, [-1, image.shape[-1]])
  rows = tf.shape(flat)[0]
  flat = tf.pad(flat, [[0, _bucket_rows(rows) - rows], [0, 0]])
  inverse = tf.cast(_inverse(matrix), tf.float32)
  source = _source_coordinates(inverse, int(output_size[0]), int(output_size[1]))
  origin = tf.cast(origin, tf.float32)
  return _bilinear_blend(flat, *_bilinear_taps(source, shape[0], shape[1], origin))


def _cv2_rgb(data: bytes) -> np.ndarray:
  """The official read of encoded bytes: cv2's 8-bit colour decode, EXIF ignored, as RGB."""
  if isinstance(data, np.ndarray):  # eager tf.numpy_function passes a 0-d object array
    data = data.item()
  try:
    image = cv2.imdecode(np.frombuffer(data, np.uint8),
                         cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
  except cv2.error:  # an empty file, for one
    image = None
  if image is None:
    raise ValueError('not an image that opencv can decode')  # InvalidArgumentError in TF
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode_with_cv2(contents) -> tf.Tensor:
  """``_cv2_rgb`` as a TF op: uint8 (H, W, 3)."""
  contents = tf.convert_to_tensor(contents, tf.string)  # raw bytes would lose trailing NULs
  image = tf.numpy_function(_cv2_rgb, [contents], tf.uint8, stateful=False)
  return tf.ensure_shape(image, [None, None, 3])


def is_windowed(contents) -> tf.Tensor:
  """Whether TF decodes ``contents`` (window by window): a JPEG, unless CMYK (TF's CMYK to
  RGB rounds otherwise than cv2's); cv2 decodes the rest."""
  return tf.cond(tf.io.is_jpeg(contents),
                 lambda: tf.io.extract_jpeg_shape(contents)[2] != 4,
                 lambda: tf.constant(False))


def decode(contents) -> tf.Tensor:
  """An encoded image (any format cv2 reads) as uint8 (H, W, 3) RGB, as TF ops.

  JPEGs: TF with cv2's IDCT; other formats: cv2 itself. Equal to the official
  ``cv2.imread(path, IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION)`` converted to RGB.
  """
  contents = tf.convert_to_tensor(contents, tf.string)
  return tf.cond(is_windowed(contents),
                 lambda: tf.io.decode_jpeg(contents, channels=3, dct_method=JPEG_DCT_METHOD),
                 lambda: _decode_with_cv2(contents))


def decode_image(data: bytes) -> np.ndarray:
  """The whole image of encoded ``data`` as uint8 (H, W, 3) RGB: the pixels the pipelines use."""
  return decode(tf.constant(bytes(data), tf.string)).numpy()


def warp_encoded(contents, matrix, output_size: Sequence[int]) -> tf.Tensor:
  """``warp_image`` of an encoded image: a JPEG's window (``warp_jpeg``), else the whole image."""
  return tf.cond(is_windowed(contents), lambda: warp_jpeg(contents, matrix, output_size),
                 lambda: warp_image(_decode_with_cv2(contents), matrix, output_size))


def warp_jpeg(contents, matrix, output_size: Sequence[int], shape=None) -> tf.Tensor:
  """``warp_image`` of an encoded JPEG, decoding only the window the warp reads.

  The window holds every pixel the warp reads, with a 2-pixel margin (a cropped decode may
  differ from a full one on its outermost pixels; with cv2's IDCT none did in the tests), so
  the result is ``warp_image`` of the whole ``decode``, bit for bit. ``shape`` is the JPEG's
  ``extract_jpeg_shape`` where the caller has it already.
  """
  shape = tf.io.extract_jpeg_shape(contents) if shape is None else shape
  height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
  inverse = _inverse(matrix)
  corners = tf.constant([[0.0, 0.0], [output_size[0] - 1.0, 0.0], [0.0, output_size[1] - 1.0],
                         [output_size[0] - 1.0, output_size[1] - 1.0]], tf.float64)
  src = tf.linalg.matvec(inverse[:, :2], corners) + inverse[:, 2]
  last = tf.stack([width, height]) - 1.0
  high = tf.clip_by_value(tf.floor(tf.reduce_max(src, 0)) + 3.0, 0.0, last)
  # With no overlap any window inside the image will do: no tap reads it.
  low = tf.clip_by_value(tf.floor(tf.reduce_min(src, 0)) - 2.0, 0.0, high)
  size = high - low + 1.0
  window = tf.cast(tf.stack([low[1], low[0], size[1], size[0]]), tf.int32)
  crop = tf.io.decode_and_crop_jpeg(contents, window, channels=3, dct_method=JPEG_DCT_METHOD)
  return warp_image(crop, matrix, output_size, origin=low)


def _target_squares(mu, radius: float, hm_w: int, hm_h: int, weight):
  """The (2 radius + 1)-pixel square of each joint around its rounded heatmap position ``mu``:
  its upper left corner, the heatmap's xs and ys, which columns (..., K, w) and rows
  (..., K, h) it covers, and ``weight`` zeroed where it lies wholly outside the heatmap."""
  upper_left = tf.cast(tf.cast(mu - radius, tf.int64), tf.float64)
  bottom_right = tf.cast(tf.cast(mu + radius + 1, tf.int64), tf.float64)
  outside = ((upper_left[..., 0] >= hm_w) | (upper_left[..., 1] >= hm_h) |
             (bottom_right[..., 0] < 0) | (bottom_right[..., 1] < 0))
  xs = tf.range(hm_w, dtype=tf.float64)
  ys = tf.range(hm_h, dtype=tf.float64)
  in_x = (xs >= upper_left[..., :1]) & (xs < bottom_right[..., :1])
  in_y = (ys >= upper_left[..., 1:]) & (ys < bottom_right[..., 1:])
  return upper_left, xs, ys, in_x, in_y, tf.where(outside, 0.0, weight)


def gaussian_targets(keypoints, *, image_size: Sequence[int], heatmap_size: Sequence[int],
                     sigma: float) -> tuple[tf.Tensor, tf.Tensor]:
  """The official ``generate_target`` (gaussian): (..., h, w, K) heatmaps, (..., K) weights.

  Each visible joint gets exp(-d^2 / 2 sigma^2) on a (6 sigma + 1)-pixel square around its
  rounded heatmap position (the official int(x / stride + 0.5)); a joint whose square lies
  wholly outside the heatmap gets weight 0.
  """
  keypoints = _f64(keypoints)
  hm_w, hm_h = int(heatmap_size[0]), int(heatmap_size[1])
  stride = tf.constant([image_size[0] / hm_w, image_size[1] / hm_h], tf.float64)
  tmp_size = sigma * 3.0
  size = 2 * tmp_size + 1
  center = float(size // 2)  # the official x0 = y0 = size // 2
  weight = tf.cast(keypoints[..., 2] > 0, tf.float32)
  mu = tf.cast(tf.cast(keypoints[..., :2] / stride + 0.5, tf.int64), tf.float64)  # trunc to 0
  upper_left, xs, ys, in_x, in_y, weight = _target_squares(mu, tmp_size, hm_w, hm_h, weight)
  # Offsets inside the official float32 kernel g, as float32 like the official arange. The
  # official exp(-(dx^2 + dy^2) / 2s^2) is evaluated as a product of 1-D factors (equal
  # within 2 float32 ulp, ~2e-7), K (h + w) exponentials instead of K h w.
  dx = tf.cast(xs - upper_left[..., :1], tf.float32) - center
  dy = tf.cast(ys - upper_left[..., 1:], tf.float32) - center
  two_sigma2 = tf.constant(2 * sigma**2, tf.float32)
  draw = tf.cast(weight > 0.5, tf.float32)[..., None]
  gx = tf.where(in_x, tf.exp(-dx**2 / two_sigma2), 0.0) * draw  # (..., K, w)
  gy = tf.where(in_y, tf.exp(-dy**2 / two_sigma2), 0.0)  # (..., K, h)
  return tf.einsum('...kh,...kw->...hwk', gy, gx), weight


def udp_gaussian_targets(keypoints, *, image_size: Sequence[int], heatmap_size: Sequence[int],
                         sigma: float) -> tuple[tf.Tensor, tf.Tensor]:
  """UDP's targets, mmpose 1.x ``UDPHeatmap.encode`` (``generate_udp_gaussian_heatmaps``):
  (..., h, w, K) heatmaps, (..., K) weights.

  Input pixels map to heatmap pixels by (heatmap size - 1) / (input size - 1) (mmpose divides
  by the float32 factor (input - 1) / (heatmap - 1); so does this). Each visible joint gets
  exp(-d^2 / 2 sigma^2), d from its exact sub-pixel position, on the (6 sigma + 1)-pixel
  square around its rounded position int(x + 0.5); a joint whose square lies wholly outside
  the heatmap gets weight 0. Computed in float64 (as mmpose, which stores float32), a
  product of 1-D factors. mmpose 0.x's ``_udp_generate_target`` draws the same Gaussians.
  """
  keypoints = _f64(keypoints)
  hm_w, hm_h = int(heatmap_size[0]), int(heatmap_size[1])
  factor = np.float32((np.asarray(image_size, np.float64) - 1.0) /
                      (np.asarray(heatmap_size, np.float64) - 1.0)).astype(np.float64)
  radius = sigma * 3.0
  centre = float((2 * radius + 1) // 2)  # mmpose's x0 = y0 = gaussian_size // 2
  weight = tf.cast(keypoints[..., 2] > 0, tf.float32)
  exact = keypoints[..., :2] / tf.constant(factor, tf.float64)
  mu = tf.cast(tf.cast(exact + 0.5, tf.int64), tf.float64)  # astype(int64): toward 0
  upper_left, xs, ys, in_x, in_y, weight = _target_squares(mu, radius, hm_w, hm_h, weight)
  # mmpose: g[i] = exp(-(i - x0)^2 / 2s^2), x0 = centre + exact - mu, at g index i = x - left.
  dx = (xs - upper_left[..., :1]) - (centre + (exact[..., :1] - mu[..., :1]))
  dy = (ys - upper_left[..., 1:]) - (centre + (exact[..., 1:] - mu[..., 1:]))
  two_sigma2 = 2.0 * float(sigma)**2
  draw = tf.cast(weight > 0.5, tf.float64)[..., None]
  gx = tf.where(in_x, tf.exp(-dx**2 / two_sigma2), 0.0) * draw
  gy = tf.where(in_y, tf.exp(-dy**2 / two_sigma2), 0.0)
  heatmaps = tf.cast(tf.einsum('...kh,...kw->...hwk', gy, gx), tf.float32)
  return heatmaps, weight


def heatmap_targets(keypoints, *, image_size: Sequence[int], heatmap_size: Sequence[int],
                    sigma: float, udp: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
  """``udp_gaussian_targets`` if ``udp``, else the official ``gaussian_targets``."""
  make = udp_gaussian_targets if udp else gaussian_targets
  return make(keypoints, image_size=image_size, heatmap_size=heatmap_size, sigma=sigma)


def warp_and_target(image, keypoints, center, scale, rotation, flip, *,
                    image_size: Sequence[int], heatmap_size: Sequence[int], sigma: float,
                    flip_pairs, with_targets: bool = True,
                    udp: bool = False) -> dict[str, tf.Tensor]:
  """One training sample as the official pipeline makes it, after the random draws.

  image (H, W, 3); keypoints (K, 3) in the original image (visibility > 0 means labelled);
  center, scale (2,) of the box; rotation in degrees; flip a bool. Returns ``image``
  (h, w, 3) float32 in 0..255 (not normalised), ``keypoints`` (K, 3) transformed with 0/1
  visibility, ``heatmaps`` (h/4, w/4, K) and ``target_weight`` (K, 1). ``with_targets``:
  as ``jpeg_warp_and_target``. ``udp``: UDP's warp (``udp_affine_matrix``) and targets
  (``udp_gaussian_targets``) instead of the official ones, as mmpose's UDP recipes.
  """
  image = tf.convert_to_tensor(image)
  return _transform_sample(lambda m: warp_image(image, m, image_size), tf.shape(image)[1],
                           keypoints, center, scale, rotation, flip, image_size=image_size,
                           heatmap_size=heatmap_size, sigma=sigma, flip_pairs=flip_pairs,
                           with_targets=with_targets, udp=udp)


def encoded_warp_and_target(contents, keypoints, center, scale, rotation, flip, *,
                            image_size: Sequence[int], heatmap_size: Sequence[int],
                            sigma: float, flip_pairs, with_targets: bool = True,
                            udp: bool = False) -> dict[str, tf.Tensor]:
  """``warp_and_target`` of an encoded image: a JPEG's window (``jpeg_warp_and_target``),
  other formats decoded whole."""
  args = (keypoints, center, scale, rotation, flip)
  kwargs = dict(image_size=image_size, heatmap_size=heatmap_size, sigma=sigma,
                flip_pairs=flip_pairs, with_targets=with_targets, udp=udp)
  return tf.cond(is_windowed(contents), lambda: jpeg_warp_and_target(contents, *args, **kwargs),
                 lambda: warp_and_target(_decode_with_cv2(contents), *args, **kwargs))


def jpeg_warp_and_target(contents, keypoints, center, scale, rotation, flip, *,
                         image_size: Sequence[int], heatmap_size: Sequence[int], sigma: float,
                         flip_pairs, with_targets: bool = True,
                         udp: bool = False) -> dict[str, tf.Tensor]:
  """``warp_and_target`` of an encoded JPEG, decoding only the pixels the warp reads.

  ``with_targets=False`` leaves out heatmaps and weights (a batched pipeline makes them
  once per batch from the returned keypoints, then float64).
  """
  shape = tf.io.extract_jpeg_shape(contents)
  return _transform_sample(lambda m: warp_jpeg(contents, m, image_size, shape), shape[1],
                           keypoints, center, scale, rotation, flip, image_size=image_size,
                           heatmap_size=heatmap_size, sigma=sigma, flip_pairs=flip_pairs,
                           with_targets=with_targets, udp=udp)


def _transform_sample(sampler, width, keypoints, center, scale, rotation, flip, *,
                      image_size, heatmap_size, sigma, flip_pairs,
                      with_targets: bool = True, udp: bool = False) -> dict[str, tf.Tensor]:
  """The body of ``warp_and_target``; ``sampler(matrix)`` warps the image."""
  keypoints = _f64(keypoints)
  num_joints = keypoints.shape[0]
  width = tf.cast(width, tf.float64)
  flip = tf.cast(flip, tf.bool)
  visible = tf.cast(keypoints[:, 2] > 0, tf.float64)  # official: vis = min(v, 1)
  xy = keypoints[:, :2]

  # Official: flip the image, mirror x, swap left/right, zero the unlabelled, mirror center.
  perm = tf.constant(kp.flip_permutation(num_joints, flip_pairs), tf.int32)
  mirrored = tf.stack([width - xy[:, 0] - 1.0, xy[:, 1]], axis=1)
  flipped_vis = tf.gather(visible, perm)
  flipped_xy = tf.gather(mirrored, perm) * flipped_vis[:, None]
  xy = tf.where(flip, flipped_xy, xy)
  visible = tf.where(flip, flipped_vis, visible)
  center = _f64(center)
  center = tf.where(flip, tf.stack([width - center[0] - 1.0, center[1]]), center)

  matrix = crop_matrix(center, scale, rotation, image_size, udp)
  # Warping the flipped image == warping the original through matrix o mirror (exact).
  mirror = tf.stack([tf.stack([-1.0, 0.0, width - 1.0]),
                     tf.constant([0.0, 1.0, 0.0], tf.float64)])
  sampling = tf.cond(flip, lambda: _compose(matrix, mirror), lambda: matrix)
  warped = sampler(sampling)

  xy = tf.where(visible[:, None] > 0, apply_affine(xy, matrix), xy)
  out_keypoints = tf.concat([xy, visible[:, None]], axis=1)
  if not with_targets:  # float64 keeps the official target rounding exact downstream
    return {'image': warped, 'keypoints': out_keypoints, 'matrix': matrix}
  out = {'image': warped, 'keypoints': tf.cast(out_keypoints, tf.float32), 'matrix': matrix}
  out['heatmaps'], weight = heatmap_targets(out_keypoints, image_size=image_size,
                                            heatmap_size=heatmap_size, sigma=sigma, udp=udp)
  out['target_weight'] = weight[:, None]
  return out


def half_body_center_scale(keypoints, upper_body_ids: Sequence[int], aspect_ratio: float,
                           choose_upper_draw, pixel_std: float = kp.PIXEL_STD):
  """The official ``half_body_transform``: (center, scale, ok) of the upper or lower body.

  ``choose_upper_draw`` is the official ``np.random.randn()`` compared with 0.5.
  ``ok`` is False where fewer than two joints are selected (the official ``None``).
  """
  keypoints = _f64(keypoints)
  num_joints = keypoints.shape[0]
  is_upper = tf.reduce_any(tf.range(num_joints)[:, None] == tf.constant(
      list(upper_body_ids), tf.int32)[None, :], axis=1)
  visible = keypoints[:, 2] > 0
  upper, lower = visible & is_upper, visible & ~is_upper
  n_upper = tf.reduce_sum(tf.cast(upper, tf.int32))
  n_lower = tf.reduce_sum(tf.cast(lower, tf.int32))
  use_upper = (_f64(choose_upper_draw) < 0.5) & (n_upper > 2)
  selected = tf.where(use_upper, upper, tf.where(n_lower > 2, lower, upper))
  count = tf.reduce_sum(tf.cast(selected, tf.float64))
  ok = count >= 2
  # float32 like the official np.array(selected_joints, dtype=np.float32).
  xy = tf.cast(tf.cast(keypoints[:, :2], tf.float32), tf.float64)
  big = tf.constant(1e30, tf.float64)
  sel = selected[:, None]
  center = tf.reduce_sum(tf.where(sel, xy, 0.0), 0) / tf.maximum(count, 1.0)
  left_top = tf.reduce_min(tf.where(sel, xy, big), 0)
  right_bottom = tf.reduce_max(tf.where(sel, xy, -big), 0)
  w = right_bottom[0] - left_top[0]
  h = right_bottom[1] - left_top[1]
  w2 = tf.where(w < aspect_ratio * h, h * aspect_ratio, w)
  h2 = tf.where(w > aspect_ratio * h, w / aspect_ratio, h)
  scale = tf.stack([w2, h2]) / pixel_std * 1.5
  return center, scale, ok


def normalize(image) -> tf.Tensor:
  """RGB 0..255 to ImageNet-normalised float32 (the official ToTensor + Normalize)."""
  mean = tf.constant(IMAGENET_MEAN, tf.float32) * 255.0
  std = tf.constant(IMAGENET_STD, tf.float32) * 255.0
  return (tf.cast(image, tf.float32) - mean) / std
