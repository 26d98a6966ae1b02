"""A torch-free, code-free reader and writer of PyTorch ``.pth`` files.

``torch.save`` files are pickles. Unpickling runs whatever callables the file names, so this
reader allows only the globals that rebuild tensors and plain containers; any other global
(``os.system``, ``builtins.eval``, a model class, ...) is refused before anything runs.
Tensors come back as numpy arrays. Both layouts are read: the zip archive of torch >= 1.6 and
the legacy sequential format that the official HRNet model zoo was saved in.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

from hrnet_jax import errors

# torch storage class name -> numpy dtype.
STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001


class UnsafeCheckpointError(errors.UserError, pickle.UnpicklingError):
  """The pickle asks for a global that is not a tensor-rebuild or container type."""


class UnreadableCheckpointError(errors.UserError, pickle.UnpicklingError):
  """The file is not a PyTorch checkpoint, or a damaged one (truncated, storages missing)."""


class _StorageType:
  """Stands for ``torch.FloatStorage`` & co.: only its dtype is used."""

  def __init__(self, name: str):
    self.name, self.dtype = name, np.dtype(STORAGE_DTYPES[name])


class _StorageRef:
  """A storage named by the pickle, filled in once the raw bytes are read."""

  def __init__(self, key: str, dtype: np.dtype, numel: int):
    self.key, self.dtype, self.numel = key, dtype, numel
    self.data: np.ndarray | None = None


class _TensorRef:
  """A tensor view of a storage (offset, size, stride in elements), materialised later."""

  def __init__(self, storage: _StorageRef, offset: int, size: tuple, stride: tuple):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

  def materialize(self) -> np.ndarray:
    data = self.storage.data
    if data is None:
      raise pickle.UnpicklingError(f'storage {self.storage.key!r} has no data')
    needed = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
    if any(n == 0 for n in self.size):
      return np.zeros(self.size, data.dtype)
    if needed > data.size:
      raise pickle.UnpicklingError(
          f'tensor of size {self.size} at offset {self.offset} overruns storage '
          f'{self.storage.key!r} of {data.size} elements')
    view = np.lib.stride_tricks.as_strided(
        data[self.offset:], shape=self.size,
        strides=tuple(s * data.itemsize for s in self.stride), writeable=False)
    return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  """Safe stand-in for ``torch._utils._rebuild_tensor(_v2)``."""
  if not isinstance(storage, _StorageRef):
    raise pickle.UnpicklingError('tensor rebuild without a storage')
  return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
  """Safe stand-in for ``torch._utils._rebuild_parameter``: a parameter is its tensor."""
  return data


def _numpy_scalar(dtype, data=None):
  """Safe stand-in for ``numpy.core.multiarray.scalar`` (e.g. a saved best AP)."""
  if not isinstance(dtype, np.dtype) or dtype.hasobject:
    raise UnsafeCheckpointError(f'numpy scalar of unsupported dtype {dtype!r}')
  return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_dtype(name, align=False, copy=False):
  """Safe stand-in for ``numpy.dtype`` for plain numeric types."""
  dtype = np.dtype(name)
  if dtype.hasobject:
    raise UnsafeCheckpointError(f'numpy dtype {name!r} holds Python objects')
  return dtype


def _codecs_encode(text, encoding='utf-8'):
  """Safe stand-in for ``_codecs.encode`` (how protocol-2 pickles store bytes)."""
  if encoding not in ('latin1', 'latin-1', 'utf-8', 'utf8'):
    raise UnsafeCheckpointError(f'_codecs.encode with encoding {encoding!r}')
  return text.encode(encoding)


_ALLOWED_GLOBALS = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('numpy.core.multiarray', 'scalar'): _numpy_scalar,
    ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
    ('numpy', 'dtype'): _numpy_dtype,
    ('_codecs', 'encode'): _codecs_encode,
}


class _SafeUnpickler(pickle.Unpickler):
  """Resolves only allow-listed globals; storages become ``_StorageRef`` placeholders."""

  def __init__(self, file: BinaryIO, source: str, legacy: bool):
    super().__init__(file)
    self.source, self.legacy = source, legacy
    self.storages: dict[str, _StorageRef] = {}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[(module, name)]
    if module == 'torch' and name in STORAGE_DTYPES:
      return _StorageType(name)
    raise UnsafeCheckpointError(
        f'{self.source}: the pickle asks for the global {module}.{name}, which is not a '
        f'tensor or container type; refusing to load it (nothing from the file was run)')

  def persistent_load(self, pid: Any) -> Any:
    if not isinstance(pid, tuple) or not pid or pid[0] not in ('storage', b'storage'):
      raise UnsafeCheckpointError(f'{self.source}: unsupported persistent id {pid!r}')
    if self.legacy:
      storage_type, key, _, numel, view_metadata = pid[1:6]
      if view_metadata is not None:
        raise pickle.UnpicklingError(f'{self.source}: storage views are not supported')
    else:
      storage_type, key, _, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
      raise UnsafeCheckpointError(f'{self.source}: unsupported storage type {storage_type!r}')
    key = str(key)
    if key not in self.storages:
      self.storages[key] = _StorageRef(key, storage_type.dtype, int(numel))
    return self.storages[key]


def _materialize(obj: Any) -> Any:
  """Replaces every ``_TensorRef`` in nested dicts, lists and tuples by its numpy array."""
  if isinstance(obj, _TensorRef):
    return obj.materialize()
  if isinstance(obj, dict):
    out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
    for k, v in obj.items():
      out[k] = _materialize(v)
    return out
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v) for v in obj)
  return obj


def _load_zip(path: str, raw: bytes) -> Any:
  with zipfile.ZipFile(io.BytesIO(raw)) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith('data.pkl') and n.count('/') == 1]
    if len(pickles) != 1:
      raise pickle.UnpicklingError(f'{path}: expected one <archive>/data.pkl in the zip, found '
                                   f'{pickles or "none"}')
    prefix = pickles[0][:-len('data.pkl')]
    byteorder = 'little'
    if prefix + 'byteorder' in names:
      byteorder = archive.read(prefix + 'byteorder').decode().strip()
    unpickler = _SafeUnpickler(io.BytesIO(archive.read(pickles[0])), path, legacy=False)
    result = unpickler.load()
    for key, storage in unpickler.storages.items():
      entry = f'{prefix}data/{key}'
      if entry not in names:
        raise pickle.UnpicklingError(f'{path}: storage {entry} is missing from the archive')
      dtype = storage.dtype.newbyteorder('<' if byteorder == 'little' else '>')
      data = np.frombuffer(archive.read(entry), dtype=dtype)
      if data.size < storage.numel:
        raise pickle.UnpicklingError(f'{path}: storage {entry} holds {data.size} elements, '
                                     f'the pickle says {storage.numel}')
      storage.data = data.astype(storage.dtype, copy=False)
  return _materialize(result)


def _load_legacy(path: str, stream: BinaryIO) -> Any:
  def header() -> Any:
    return _SafeUnpickler(stream, path, legacy=True).load()

  if header() != _LEGACY_MAGIC:
    raise pickle.UnpicklingError(f'{path}: not a PyTorch file (bad magic number)')
  if header() != _LEGACY_PROTOCOL:
    raise pickle.UnpicklingError(f'{path}: unsupported legacy protocol version')
  sys_info = header()
  if isinstance(sys_info, dict) and not sys_info.get('little_endian', True):
    raise pickle.UnpicklingError(f'{path}: big-endian legacy files are not supported')
  unpickler = _SafeUnpickler(stream, path, legacy=True)
  result = unpickler.load()
  keys = header()
  for key in keys:
    storage = unpickler.storages.get(str(key))
    if storage is None:
      raise pickle.UnpicklingError(f'{path}: unknown storage key {key!r}')
    (numel,) = struct.unpack('<q', stream.read(8))
    nbytes = numel * storage.dtype.itemsize
    buffer = stream.read(nbytes)
    if len(buffer) != nbytes:
      raise pickle.UnpicklingError(f'{path}: file ends inside storage {key!r}')
    storage.data = np.frombuffer(buffer, dtype=storage.dtype)
  return _materialize(result)


def load(path: str | os.PathLike) -> Any:
  """Reads a ``torch.save`` file into dicts, lists and numpy arrays, running no code from it."""
  path = os.fspath(path)
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except FileNotFoundError:
    raise errors.MissingFileError(f'checkpoint file not found: {path}') from None
  try:
    if zipfile.is_zipfile(io.BytesIO(raw)):
      return _load_zip(path, raw)
    return _load_legacy(path, io.BytesIO(raw))
  except UnsafeCheckpointError:
    raise
  except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, ValueError,
          KeyError, IndexError, TypeError) as e:
    raise UnreadableCheckpointError(f'{path}: not a readable PyTorch checkpoint: {e}') from e


# ----------------------------------------------------------------------------- writing

_NUMPY_STORAGES = {np.dtype(v): k for k, v in STORAGE_DTYPES.items()}


def _op_global(module: str, name: str) -> bytes:
  return b'c' + module.encode() + b'\n' + name.encode() + b'\n'


def _op_str(text: str) -> bytes:
  data = text.encode('utf-8')
  return b'X' + struct.pack('<I', len(data)) + data


def _op_int(value: int) -> bytes:
  if -2**31 <= value < 2**31:
    return b'J' + struct.pack('<i', value)
  data = value.to_bytes(9, 'little', signed=True)
  return b'\x8a' + bytes([len(data)]) + data  # LONG1


def _op_int_tuple(values) -> bytes:
  return b'(' + b''.join(_op_int(int(v)) for v in values) + b't'


def save_state_dict(state_dict: dict[str, np.ndarray], path: str | os.PathLike) -> None:
  """Writes a dict of numpy arrays as a zip ``.pth`` file that ``torch.load`` reads."""
  path = os.fspath(path)
  archive_name = os.path.splitext(os.path.basename(path))[0] or 'archive'
  pkl = bytearray(b'\x80\x02' + _op_global('collections', 'OrderedDict') + b')R(')
  storages = []
  for i, (key, value) in enumerate(state_dict.items()):
    array = np.ascontiguousarray(value)
    if array.dtype not in _NUMPY_STORAGES:
      raise TypeError(f'{key}: dtype {array.dtype} has no torch storage type')
    storages.append(array)
    strides = [s // array.itemsize for s in array.strides]
    pkl += _op_str(key) + _op_global('torch._utils', '_rebuild_tensor_v2') + b'('
    pkl += (b'(' + _op_str('storage') + _op_global('torch', _NUMPY_STORAGES[array.dtype]) +
            _op_str(str(i)) + _op_str('cpu') + _op_int(array.size) + b'tQ')
    pkl += _op_int(0) + _op_int_tuple(array.shape) + _op_int_tuple(strides)
    pkl += b'\x89' + _op_global('collections', 'OrderedDict') + b')Rt' + b'R'
  pkl += b'u.'
  tmp = path + '.tmp'
  with zipfile.ZipFile(tmp, 'w', compression=zipfile.ZIP_STORED) as archive:
    archive.writestr(f'{archive_name}/data.pkl', bytes(pkl))
    archive.writestr(f'{archive_name}/byteorder', 'little')
    for i, array in enumerate(storages):
      archive.writestr(f'{archive_name}/data/{i}', array.astype(array.dtype.newbyteorder('<'),
                                                                copy=False).tobytes())
    archive.writestr(f'{archive_name}/version', '3\n')
  os.replace(tmp, path)
