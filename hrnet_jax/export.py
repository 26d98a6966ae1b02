"""Exported networks: ONNX, TF SavedModel, TFLite (float32, float16 weights) and StableHLO.

What is exported is a pure function of a batch of network inputs, (N, H, W, 3) float32 RGB
normalised by the ImageNet mean and std (``warp.normalize``), with a dynamic batch dimension:

- head ``'network'``: the network's outputs: heatmaps (N, h, w, K) of a top-down HRNet, the
  two outputs of a HigherHRNet (1/4: K heatmaps then the tags; 1/2: K heatmaps);
- head ``'decoded'`` (top-down): the test of the config on those crops: the flip-test merge
  and argmax decoding: ``coords`` (N, K, 2) heatmap pixels and ``maxvals`` (N, K), and the
  merged ``heatmaps`` where DARK or UDP refine on the host.

What needs the box or the whole image (the affine back to image pixels, NMS, grouping) stays
in Python, shared with the estimator (``predictors``). Inference-mode BatchNorm is folded
into the convolution before it (``fold_batch_norm``): the exported graph has no BatchNorm.

Paths: ONNX through ``jax2onnx`` from the function's jaxpr (only JAX primitives, so no Flax
module of jax2onnx's is involved); TF SavedModel and TFLite through ``jax2tf`` (the
StableHLO inside an ``XlaCallModule`` op); StableHLO through ``jax.export``. Every file is
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hrnet_jax import decode, errors, models

FORMATS = ('onnx', 'savedmodel', 'tflite', 'tflite_fp16', 'stablehlo')
HEADS = ('network', 'decoded')
LAYOUTS = ('nhwc', 'nchw')
FILE_NAMES = {'onnx': 'model.onnx', 'savedmodel': 'saved_model', 'tflite': 'model.tflite',
              'tflite_fp16': 'model_fp16.tflite', 'stablehlo': 'model.stablehlo'}
ONNX_OPSET = 18
BATCH = 'batch'  # the name of the dynamic batch dimension


@dataclasses.dataclass(frozen=True)
class Exportable:
  """A pure function of a batch of network inputs, with its input shape and output names."""
  fn: Callable[[jax.Array], Any]
  image_shape: tuple[int, int]  # (H, W) of the input
  output_names: tuple[str, ...]


def _export_model(model_config: ml_collections.ConfigDict) -> nn.Module:
  """The model of ``model_config`` in float32 on the plain XLA path (what runtimes run)."""
  model_config = ml_collections.ConfigDict(model_config.to_dict())
  model_config.dtype = 'float32'
  model_config.fast_path = 'off'
  return models.create_model(model_config)


def _get(tree: dict, path: Sequence[str]) -> dict:
  for key in path:
    tree = tree[key]
  return tree


def batch_norm_pairs(model: nn.Module, variables: Any, image_shape: tuple[int, int]
                     ) -> dict[tuple[str, ...], tuple[tuple[tuple[str, ...], int] | None, float]]:
  """{BatchNorm path: ((path of the convolution whose output it normalises, its kernel's
  output-channel axis) or None; its epsilon)}, found by tracing the model once (shapes
  only)."""
  produced: dict[int, tuple[Any, tuple[str, ...]]] = {}
  pairs = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name == '__call__':
      if isinstance(module, (nn.Conv, nn.ConvTranspose)):
        # The kernel's output-channel axis: HWIO, or HWOI for a torch-style transposed kernel.
        axis = -2 if getattr(module, 'transpose_kernel', False) else -1
        produced[id(out)] = (out, (tuple(module.path), axis))  # out kept alive: ids unique
      elif isinstance(module, nn.BatchNorm):
        source = produced.get(id(args[0]))
        pairs[tuple(module.path)] = (source[1] if source else None, float(module.epsilon))
    return out

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables,
                   jax.ShapeDtypeStruct((1, *image_shape, 3), jnp.float32))
  return pairs


def fold_batch_norm(model: nn.Module, variables: Any, image_shape: tuple[int, int]
                    ) -> tuple[dict, dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]]]:
  """Variables whose convolutions include the BatchNorm after them, and per BatchNorm the
  (multiplier, shift) still to apply: (1, shift) where folded (the bias the convolution has
  no parameter for), (scale / sqrt(var + eps), bias - mean x that) where nothing precedes it.

  Inference-mode BatchNorm is y = x * m + s with m = scale / sqrt(var + eps) and
  s = bias - mean * m; after conv with kernel W it is conv with W * m (output channels) plus s.
  """
  params = jax.tree.map(np.asarray, dict(variables['params']))
  stats = jax.tree.map(np.asarray, dict(variables.get('batch_stats', {})))
  params = jax.tree.map(lambda x: np.array(x, np.float32), params)
  affine = {}
  for bn_path, (conv, epsilon) in batch_norm_pairs(model, variables, image_shape).items():
    bn, stat = _get(params, bn_path), _get(stats, bn_path)
    multiplier = (bn['scale'].astype(np.float64) /
                  np.sqrt(stat['var'].astype(np.float64) + epsilon))
    shift = bn['bias'] - stat['mean'].astype(np.float64) * multiplier
    if conv is None:
      affine[bn_path] = (multiplier.astype(np.float32), shift.astype(np.float32))
      continue
    conv_path, axis = conv
    conv = _get(params, conv_path)
    kernel = np.moveaxis(conv['kernel'].astype(np.float64), axis, -1) * multiplier
    conv['kernel'] = np.moveaxis(kernel, -1, axis).astype(np.float32)
    if 'bias' in conv:
      shift = shift + conv.pop('bias').astype(np.float64) * multiplier
      conv['bias'] = np.zeros_like(shift, np.float32)
    affine[bn_path] = (None, shift.astype(np.float32))
  return {'params': params, 'batch_stats': stats}, affine


def _dilate(x: jax.Array, strides: Sequence[int]) -> jax.Array:
  """(N, H, W, C) with ``stride - 1`` zeros between neighbouring pixels of each spatial axis
  (the ``lhs_dilation`` of a transposed convolution, written with concatenate and reshape)."""
  for axis, stride in ((1, strides[0]), (2, strides[1])):
    if stride == 1:
      continue
    shape = list(x.shape)
    size = shape[axis]
    expanded = jnp.expand_dims(x, axis + 1)
    shape[axis] = size * stride
    x = jnp.concatenate([expanded] + [jnp.zeros_like(expanded)] * (stride - 1),
                        axis=axis + 1).reshape(shape)
    x = jax.lax.slice_in_dim(x, 0, (size - 1) * stride + 1, axis=axis)
  return x


def conv_transpose(module: nn.ConvTranspose, x: jax.Array) -> jax.Array:
  """``module(x)`` as a stride-1 convolution of the zero-dilated input: what
  ``lax.conv_transpose`` computes, without ``lhs_dilation`` (which jax2onnx 0.12 converts
  wrongly). Explicit padding, as the models use."""
  kernel = np.asarray(module.get_variable('params', 'kernel'), np.float32)
  kernel = kernel[::-1, ::-1]  # lax.conv_transpose's spatial flip
  if module.transpose_kernel:
    kernel = np.swapaxes(kernel, 2, 3)
  if isinstance(module.padding, str) or module.kernel_dilation not in (None, 1, (1, 1)):
    raise errors.UserError(f'{module.path}: only transposed convolutions with explicit padding '
                           f'and no kernel dilation are exported')
  y = jax.lax.conv_general_dilated(
      _dilate(x, module.strides), jnp.asarray(np.ascontiguousarray(kernel)), (1, 1),
      tuple(tuple(p) for p in module.padding), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  if module.use_bias:
    y = y + module.get_variable('params', 'bias')
  return y


def folded_apply(model: nn.Module, variables: Any, image_shape: tuple[int, int]
                 ) -> Callable[[jax.Array], Any]:
  """``x -> model.apply(variables, x, train=False)`` with every BatchNorm folded (equal to
  float32 rounding), and transposed convolutions as ``conv_transpose`` computes them."""
  folded, affine = fold_batch_norm(model, variables, image_shape)

  def apply_affine(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name == '__call__' and isinstance(module, nn.BatchNorm):
      multiplier, shift = affine[tuple(module.path)]
      x = args[0]
      return (x if multiplier is None else x * multiplier) + shift
    if context.method_name == '__call__' and isinstance(module, nn.ConvTranspose):
      return conv_transpose(module, args[0])
    return next_fun(*args, **kwargs)

  def apply(x):
    with nn.intercept_methods(apply_affine):
      return model.apply(folded, x, train=False)
  return apply


def network(model_config: ml_collections.ConfigDict, variables: Any,
            image_shape: tuple[int, int], output_names: Sequence[str] = ('heatmaps',),
            fold: bool = True) -> Exportable:
  """The network alone (head 'network') on inputs of ``image_shape`` (H, W); its outputs
  named ``output_names`` (the task's ``network_outputs``)."""
  model = _export_model(model_config)
  fn = (folded_apply(model, variables, image_shape) if fold
        else lambda x: model.apply(variables, x, train=False))
  return Exportable(fn, tuple(image_shape), tuple(output_names))


def decoded(config: ml_collections.ConfigDict, net: Exportable) -> Exportable:
  """Head 'decoded' of a top-down network: the test of ``config`` on the crops
  (``decode.crop_outputs_function``): coords, maxvals (and heatmaps for DARK / UDP)."""
  outputs = decode.crop_outputs_function(config)
  names = ('coords', 'maxvals') + (
      ('heatmaps',) if config.test.decoder in decode.HOST_DECODERS else ())

  def fn(x):
    out = outputs(net.fn, x)
    return tuple(out[name] for name in names)
  return Exportable(fn, net.image_shape, names)


@functools.cache
def _batch_dim():
  # One symbolic scope for every export of the process: jitted helpers cache their traces,
  # and dimensions of two scopes must not meet.
  batch, = jax.export.symbolic_shape(BATCH)
  return batch


def _batch_spec(image_shape: tuple[int, int]) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((_batch_dim(), *image_shape, 3), jnp.float32)


def _as_tuple(out: Any) -> tuple:
  return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def to_onnx(exported: Exportable, nchw: bool = False) -> bytes:
  """The ONNX model (opset ``ONNX_OPSET``, dynamic batch) of ``exported``; ``nchw``: input
  and 4-d outputs in NCHW."""
  # jax2onnx logs a traceback for each optional plugin (dm_pix) that does not import.
  logging.getLogger('jax2onnx.plugins.plugin_system').setLevel(logging.ERROR)
  try:
    from jax2onnx import to_onnx as jax_to_onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.UserError('ONNX export needs jax2onnx: pip install -e ".[export]"') from e
  import jax.extend.core as jex  # pylint: disable=g-import-not-at-top
  closed = jax.make_jaxpr(lambda x: _as_tuple(exported.fn(x)))(_batch_spec(exported.image_shape))
  run = jex.jaxpr_as_fun(closed)
  four_d = [i for i, aval in enumerate(closed.out_avals) if len(aval.shape) == 4]
  with contextlib.redirect_stdout(io.StringIO()):  # jax2onnx prints debugging lines
    proto = jax_to_onnx(lambda x: tuple(run(x)), [_batch_spec(exported.image_shape)],
                        opset=ONNX_OPSET, inputs_as_nchw=[0] if nchw else None,
                        outputs_as_nchw=four_d if nchw else None, input_names=['image'],
                        output_names=list(exported.output_names), model_name='hrnet_jax')
  return proto.SerializeToString()


def onnxruntime_session(data: bytes, threads: int | None = None):
  """An ONNX Runtime CPU session of ``data`` with every graph optimisation, on ``threads``
  intra-op threads (default: every core)."""
  try:
    import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.UserError('the ONNX Runtime backend needs onnxruntime: pip install -e '
                           '".[export]"') from e
  options = ort.SessionOptions()
  options.intra_op_num_threads = threads or os.cpu_count() or 1
  options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
  return ort.InferenceSession(data, options, providers=['CPUExecutionProvider'])


def onnxruntime_network(exported: Exportable, threads: int | None = None
                        ) -> Callable[[jax.Array], Any]:
  """``exported.fn`` run by ONNX Runtime, callable inside ``jax.jit`` (a ``pure_callback``):
  the backend='onnxruntime' of the predictors."""
  session = onnxruntime_session(to_onnx(exported), threads)
  avals = _as_tuple(jax.eval_shape(exported.fn, jax.ShapeDtypeStruct(
      (1, *exported.image_shape, 3), jnp.float32)))

  def run(images: np.ndarray) -> tuple[np.ndarray, ...]:
    outputs = session.run(None, {'image': np.ascontiguousarray(images, np.float32)})
    return tuple(np.asarray(o, a.dtype) for o, a in zip(outputs, avals))

  def fn(images: jax.Array) -> Any:
    shapes = tuple(jax.ShapeDtypeStruct((images.shape[0], *a.shape[1:]), a.dtype)
                   for a in avals)
    out = jax.pure_callback(run, shapes, images.astype(jnp.float32))
    return out if len(out) > 1 else out[0]
  return fn


def to_stablehlo(exported: Exportable) -> bytes:
  """The serialized ``jax.export`` artifact (StableHLO, dynamic batch) of ``exported``."""
  artifact = jax.export.export(jax.jit(lambda x: _as_tuple(exported.fn(x))))(
      _batch_spec(exported.image_shape))
  return bytes(artifact.serialize())


def load_stablehlo(path: str) -> Callable[[Any], tuple]:
  """The function of a ``to_stablehlo`` file: images -> the tuple of outputs."""
  with open(path, 'rb') as f:
    artifact = jax.export.deserialize(bytearray(f.read()))
  return artifact.call


def _tf_function(exported: Exportable):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  height, width = exported.image_shape
  converted = jax2tf.convert(lambda x: _as_tuple(exported.fn(x)), with_gradient=False,
                             polymorphic_shapes=[f'({BATCH}, {height}, {width}, 3)'])

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, height, width, 3], tf.float32, name='image')])
  def serve(image):
    return dict(zip(exported.output_names, converted(image)))
  return serve


def to_saved_model(exported: Exportable, directory: str) -> None:
  """A TF SavedModel of ``exported`` in ``directory`` (signature ``serving_default``)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  module = tf.Module()
  module.serve = _tf_function(exported)
  tf.saved_model.save(module, directory, signatures={'serving_default': module.serve})


def to_tflite(exported: Exportable, float16: bool = False) -> bytes:
  """A TFLite flatbuffer of ``exported`` (signature ``serving_default``, input ``image``):
  float32, or float16 weights (``float16``). Converted from a SavedModel; the TFLite
  converter lowers the StableHLO of jax2tf's ``XlaCallModule`` to TFLite builtins."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    to_saved_model(exported, os.path.join(tmp, 'saved'))
    converter = tf.lite.TFLiteConverter.from_saved_model(os.path.join(tmp, 'saved'))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if float16:
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
      converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def run_tflite(data: bytes, images: np.ndarray) -> dict[str, np.ndarray]:
  """The outputs (by name) of a ``to_tflite`` model on a batch of network inputs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  interpreter = tf.lite.Interpreter(model_content=data)
  runner = interpreter.get_signature_runner('serving_default')
  return runner(image=np.ascontiguousarray(images, np.float32))


def write_atomically(path: str, write: Callable[[str], None]) -> None:
  """``write(temporary path)``, then the temporary file or folder renamed to ``path``."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
  target = os.path.join(tmp, os.path.basename(path))
  try:
    write(target)
    os.replace(target, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def write_file(path: str, data: bytes) -> None:
  """``data`` written to ``path`` atomically (``write_atomically``)."""
  def write(target: str) -> None:
    with open(target, 'wb') as f:
      f.write(data)
  write_atomically(path, write)


def export(exported: Exportable, output_dir: str, formats: Sequence[str] = ('onnx',), *,
           layout: str = 'nhwc') -> dict[str, str]:
  """Writes each of ``formats`` of ``exported`` into ``output_dir`` (refusing files that
  exist); returns {format: path}. ``layout`` applies to ONNX (the others are NHWC)."""
  unknown = [f for f in formats if f not in FORMATS]
  if unknown:
    raise errors.UserError(f'export format(s) {", ".join(unknown)}: expected some of '
                           f'{", ".join(FORMATS)}')
  if layout not in LAYOUTS:
    raise errors.UserError(f'layout {layout!r}: expected one of {", ".join(LAYOUTS)}')
  paths = {f: os.path.join(output_dir, FILE_NAMES[f]) for f in formats}
  existing = [p for p in paths.values() if os.path.exists(p)]
  if existing:
    raise errors.ExistingFileError(f'{", ".join(existing)} already exist(s); refusing to '
                                   f'overwrite')
  for fmt, path in paths.items():
    if fmt == 'onnx':
      write_file(path, to_onnx(exported, nchw=layout == 'nchw'))
    elif fmt == 'stablehlo':
      write_file(path, to_stablehlo(exported))
    elif fmt == 'savedmodel':
      write_atomically(path, lambda p: to_saved_model(exported, p))
    else:
      write_file(path, to_tflite(exported, fmt == 'tflite_fp16'))
  return paths
