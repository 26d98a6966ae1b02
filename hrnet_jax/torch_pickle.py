"""A torch-free, code-free reader and writer of PyTorch ``.pth`` files.

``torch.save`` files are pickles. Unpickling runs whatever callables the file names, so this
reader resolves only the globals that rebuild tensors, numpy arrays and plain containers, each
by a stand-in of its own that builds data and calls nothing from the file. Tensors and numpy
arrays come back as numpy arrays (``np.frombuffer`` of their raw bytes; arrays of Python
objects are never decoded). Both layouts are read: the zip archive of torch >= 1.6 and the
legacy sequential format that the official HRNet and mmpose model zoos were saved in.

Any other global (``os.system``, ``builtins.eval``, a model class, ``mmengine``'s
``HistoryBuffer``, ...) is, by mode:

* strict (``load(path)``, the default): refused with ``UnsafeCheckpointError`` naming it,
  before anything runs;
* placeholders (``load(path, placeholders=True)``): read as an inert placeholder, a fresh
  subclass of ``Inert`` that records the global's module and name; an "instance" of it records
  the arguments it was "called" with, its BUILD state and the items the pickle set or appended
  on it. Nothing the file names is ever called (``Inert`` defines every hook the unpickler
  uses). This is for files whose metadata holds objects of other libraries (mmengine's
  ``HistoryBuffer`` and ``ConfigDict`` in mmpose checkpoints): a caller that needs tensors
  from such a file must check that its part holds no placeholder (``find_inert``), as
  ``weights.read_state_dict`` does for the state_dict.
"""

from __future__ import annotations

import collections
import functools
import io
import math
import os
import pickle
import reprlib
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


class Inert:
  """Base of the placeholders for globals that a pickle names outside the allow-list.

  ``load(..., placeholders=True)`` makes a fresh subclass per global, named like it, with
  ``inert_module``/``inert_name`` set. The pickle may use it as a value (the class itself) or
  "call" it (REDUCE, NEWOBJ, INST, OBJ): that makes an instance which records ``args`` and
  ``kwargs``; BUILD records ``state``; SETITEMS records ``dict_items``; APPENDS records
  ``list_items``. Nothing else happens: no method of the real class exists here to be run.
  """

  inert_module: str = ''
  inert_name: str = ''

  def __new__(cls, *args, **kwargs):
    self = object.__new__(cls)
    self.args, self.kwargs = args, kwargs
    self.state, self.dict_items, self.list_items = None, {}, []
    return self

  def __init__(self, *args, **kwargs):
    del args, kwargs  # everything was recorded by __new__

  def __setstate__(self, state):
    self.state = state

  def __setitem__(self, key, value):
    self.dict_items[key] = value

  def append(self, value):
    self.list_items.append(value)

  def extend(self, values):
    self.list_items.extend(values)

  @classmethod
  def global_name(cls) -> str:
    """``module.name`` of the global this placeholder stands for."""
    return f'{cls.inert_module}.{cls.inert_name}'

  @reprlib.recursive_repr('<inert ...>')
  def __repr__(self) -> str:
    parts = [repr(a) for a in self.args] + [f'{k}={v!r}' for k, v in self.kwargs.items()]
    extra = ''.join(f', {name}={value!r}' for name, value in (
        ('state', self.state), ('dict_items', self.dict_items), ('list_items', self.list_items))
                    if value)
    return f'<inert {self.global_name()}({", ".join(parts)}){extra}>'


def inert_class(module: str, name: str) -> type[Inert]:
  """A fresh placeholder class for the global ``module.name`` (nothing is imported)."""
  return type(str(name), (Inert,), {'inert_module': str(module), 'inert_name': str(name),
                                    '__module__': f'inert:{module}', '__qualname__': str(name)})


def is_inert(obj: Any) -> bool:
  """Whether ``obj`` is a placeholder class or an instance of one."""
  return isinstance(obj, Inert) or (isinstance(obj, type) and issubclass(obj, Inert))


def find_inert(obj: Any) -> list[str]:
  """The globals (``module.name``) of the placeholders inside ``obj``, each named once.

  Looks through dict keys and values, lists, tuples, sets, attributes that the pickle set on
  dicts (an OrderedDict's ``_metadata``) and the recorded parts of placeholders.
  """
  found: dict[str, None] = {}
  seen: set[int] = set()
  stack = [obj]
  while stack:
    item = stack.pop()
    if id(item) in seen:
      continue
    seen.add(id(item))
    if is_inert(item):
      found[(item if isinstance(item, type) else type(item)).global_name()] = None
      if isinstance(item, Inert):
        stack.extend([item.args, item.kwargs, item.state, item.dict_items, item.list_items])
    elif isinstance(item, dict):
      stack.extend(dict.keys(item))
      stack.extend(dict.values(item))
      stack.extend(getattr(item, '__dict__', {}).values())
    elif isinstance(item, (list, tuple, set, frozenset)):
      stack.extend(item)
  return list(found)


class _NdarrayType:
  """Stands for ``numpy.ndarray`` as the first argument of ``_reconstruct``; not callable."""

  def __new__(cls, *args, **kwargs):
    raise pickle.UnpicklingError('the pickle calls numpy.ndarray directly; only '
                                 'numpy\'s own array pickling is read')


class _Unsupported(Exception):
  """A numpy dtype or array that is not read as data (objects, records, ...)."""


# Kinds of numpy dtypes read as data: bool, integers, floats, complex, bytes and str.
_DATA_KINDS = 'biufcSU'


class _DtypeSpec:
  """Safe stand-in for ``numpy.dtype(name, align, copy)`` + BUILD: resolved to a dtype later.

  The real ``np.dtype`` would hand back numpy's shared dtype objects, whose ``__setstate__``
  the pickle's BUILD would then call; this records the state instead.
  """

  def __init__(self, name=None, align=False, copy=False, *unused):
    self.name, self.state = name, None

  def __setstate__(self, state):
    self.state = state

  def resolve(self) -> np.dtype:
    if not isinstance(self.name, str):
      raise _Unsupported(f'numpy dtype named by {type(self.name).__name__}')
    try:
      dtype = np.dtype(self.name)
    except (TypeError, ValueError) as e:
      raise _Unsupported(f'numpy dtype {self.name!r}: {e}') from None
    if dtype.kind not in _DATA_KINDS or dtype.fields is not None or dtype.subdtype is not None:
      raise _Unsupported(f'numpy dtype {self.name!r} is not a plain numeric or string type')
    state = self.state
    if state is not None:
      if (not isinstance(state, tuple) or len(state) < 5 or
          any(part is not None for part in state[2:5])):
        raise _Unsupported(f'numpy dtype {self.name!r} with state {state!r}')
      if state[1] in ('<', '>'):
        dtype = dtype.newbyteorder(state[1])
    return dtype


def _resolve_dtype(dtype) -> np.dtype:
  if isinstance(dtype, _DtypeSpec):
    return dtype.resolve()
  raise _Unsupported(f'not a numpy dtype: {type(dtype).__name__}')


def _numpy_scalar(dtype, data=None):
  """Safe stand-in for ``numpy.core.multiarray.scalar`` (e.g. a saved best AP)."""
  try:
    resolved = _resolve_dtype(dtype)
  except _Unsupported as e:
    raise _Unsupported(f'numpy scalar: {e}') from None
  if not isinstance(data, (bytes, bytearray)):
    raise pickle.UnpicklingError(f'numpy scalar of {resolved} without its bytes')
  return np.frombuffer(data, dtype=resolved, count=1)[0]


class _ArraySpec:
  """Safe stand-in for ``numpy.core.multiarray._reconstruct(ndarray, ...)`` + BUILD.

  BUILD's state is ``(version, shape, dtype, is_fortran, raw bytes)``; the array is made
  later as ``np.frombuffer`` of the bytes. Arrays of Python objects (whose "bytes" are a list
  of objects) are never decoded.
  """

  def __init__(self, args):
    self.args, self.state = args, None

  def __setstate__(self, state):
    self.state = state

  def build(self) -> np.ndarray:
    state = self.state
    if not isinstance(state, tuple) or len(state) not in (4, 5):
      raise _Unsupported(f'numpy array with state {type(state).__name__}')
    shape, dtype, fortran, raw = state[-4:]
    dtype = _resolve_dtype(dtype)
    if not isinstance(raw, (bytes, bytearray)):
      raise _Unsupported(f'numpy array of {dtype} without raw bytes')
    if (not isinstance(shape, tuple) or
        not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
      raise pickle.UnpicklingError(f'numpy array of bad shape {shape!r}')
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
      raise pickle.UnpicklingError(f'numpy array of shape {shape} and dtype {dtype} has '
                                   f'{len(raw)} bytes')
    flat = np.frombuffer(raw, dtype=dtype, count=count)
    return np.array(flat.reshape(shape, order='F' if fortran else 'C'), order='K')


def _frombuffer(buffer, dtype, shape, order='C', *unused):
  """Safe stand-in for ``numpy.core.numeric._frombuffer`` (arrays in pickle protocol 5)."""
  spec = _ArraySpec(())
  spec.state = (tuple(shape) if isinstance(shape, (tuple, list)) else shape, dtype,
                order == 'F', bytes(buffer) if isinstance(buffer, (bytes, bytearray,
                                                                    memoryview)) else buffer)
  return spec


def _codecs_encode(text, encoding='utf-8'):
  """Safe stand-in for ``_codecs.encode`` (how protocol-2 pickles store bytes)."""
  if encoding not in ('latin1', 'latin-1', 'utf-8', 'utf8'):
    raise UnsafeCheckpointError(f'_codecs.encode with encoding {encoding!r}')
  return text.encode(encoding)


def _bytes(*args):
  """Safe stand-in for ``bytes``: protocol-2 pickles store ``b''`` as ``bytes()``."""
  if not args:
    return b''
  if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
    return bytes(args[0])
  raise pickle.UnpicklingError(f'bytes() of {", ".join(type(a).__name__ for a in args)}')


def _reconstruct(subtype, shape=None, typecode=None, *unused):
  """Safe stand-in for ``numpy.core.multiarray._reconstruct``: plain ndarrays only."""
  if subtype is not _NdarrayType:
    raise _Unsupported(f'numpy _reconstruct of {subtype!r}, not of numpy.ndarray')
  return _ArraySpec((shape, typecode))


_ALLOWED_GLOBALS = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('numpy', 'dtype'): _DtypeSpec,
    ('numpy', 'ndarray'): _NdarrayType,
    ('_codecs', 'encode'): _codecs_encode,
    ('__builtin__', 'bytes'): _bytes,
    ('builtins', 'bytes'): _bytes,
}
for _numpy_core in ('numpy.core', 'numpy._core'):  # numpy < 2 and numpy >= 2 pickle names
  _ALLOWED_GLOBALS[(f'{_numpy_core}.multiarray', 'scalar')] = _numpy_scalar
  _ALLOWED_GLOBALS[(f'{_numpy_core}.multiarray', '_reconstruct')] = _reconstruct
  _ALLOWED_GLOBALS[(f'{_numpy_core}.numeric', '_frombuffer')] = _frombuffer


class _SafeUnpickler(pickle.Unpickler):
  """Resolves only allow-listed globals; storages become ``_StorageRef`` placeholders.

  With ``placeholders``, any other global becomes a fresh ``Inert`` subclass (one per global
  and file); without, it is refused.
  """

  def __init__(self, file: BinaryIO, source: str, legacy: bool, placeholders: bool = False):
    super().__init__(file)
    self.source, self.legacy, self.placeholders = source, legacy, placeholders
    self.storages: dict[str, _StorageRef] = {}
    self.inert: dict[tuple[str, str], type[Inert]] = {}

  def find_class(self, module: str, name: str) -> Any:
    key = (str(module), str(name))
    if key in _ALLOWED_GLOBALS:
      stand_in = _ALLOWED_GLOBALS[key]
      if stand_in in (_reconstruct, _numpy_scalar):
        return functools.partial(self._numpy_call, stand_in, key)
      return stand_in
    if module == 'torch' and name in STORAGE_DTYPES:
      return _StorageType(name)
    if self.placeholders:
      if key not in self.inert:
        self.inert[key] = inert_class(*key)
      return self.inert[key]
    raise UnsafeCheckpointError(
        f'{self.source}: the pickle asks for the global {module}.{name}, which is not a '
        f'tensor or container type; refusing to load it (nothing from the file was run)')

  def _numpy_call(self, stand_in, key: tuple[str, str], *args):
    """A numpy stand-in; what it does not read as data (an array subclass, a scalar of
    objects) is refused, or with placeholders recorded by a placeholder of the global."""
    try:
      return stand_in(*args)
    except (_Unsupported, UnsafeCheckpointError) as e:
      if not self.placeholders:
        raise UnsafeCheckpointError(f'{self.source}: {e}; refusing to load it (nothing from '
                                    f'the file was run)') from None
      if key not in self.inert:
        self.inert[key] = inert_class(*key)
      return self.inert[key](*args)

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


class _Materializer:
  """Replaces the stand-ins (tensors, numpy arrays and dtypes) by numpy objects, everywhere.

  Walks dicts (and the attributes the pickle set on them, e.g. an OrderedDict's
  ``_metadata``), lists, tuples and the recorded parts of placeholders, shared and cyclic
  references included. A numpy array or dtype that is not read as data is refused in strict
  mode and becomes a placeholder of the global it was made by otherwise.
  """

  def __init__(self, source: str, placeholders: bool):
    self.source, self.placeholders = source, placeholders
    self.memo: dict[int, Any] = {}

  def _unsupported(self, what: str, error: _Unsupported, args: tuple, state: Any) -> Any:
    if not self.placeholders:
      raise UnsafeCheckpointError(f'{self.source}: {error}; refusing to load it (nothing from '
                                  f'the file was run)')
    placeholder = inert_class('numpy', what)(*args)
    placeholder.state = self(state)
    return placeholder

  def __call__(self, obj: Any) -> Any:
    if id(obj) in self.memo:
      return self.memo[id(obj)]
    if isinstance(obj, _TensorRef):
      out = self.memo[id(obj)] = obj.materialize()
    elif isinstance(obj, _ArraySpec):
      try:
        out = obj.build()
      except _Unsupported as e:
        out = self._unsupported('ndarray', e, obj.args, obj.state)
      self.memo[id(obj)] = out
    elif isinstance(obj, _DtypeSpec):
      try:
        out = obj.resolve()
      except _Unsupported as e:
        out = self._unsupported('dtype', e, (obj.name,), obj.state)
      self.memo[id(obj)] = out
    elif isinstance(obj, dict):
      out = self.memo[id(obj)] = (
          collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {})
      for k, v in dict.items(obj):
        out[self(k)] = self(v)
      for name, value in getattr(obj, '__dict__', {}).items():
        # Attributes the pickle set (torch's ``_metadata``); one that would hide a method of
        # the dict is kept under a name no attribute lookup finds (find_inert still sees it).
        if not (isinstance(name, str) and name.isidentifier() and not name.startswith('__')
                and not hasattr(type(out), name)):
          name = f'pickled:{name!r}'
        out.__dict__[name] = self(value)
    elif isinstance(obj, list):
      out = self.memo[id(obj)] = []
      out.extend(self(v) for v in obj)
    elif isinstance(obj, tuple):
      self.memo[id(obj)] = obj  # a cycle back to this tuple keeps the original
      out = self.memo[id(obj)] = tuple(self(v) for v in obj)
    elif isinstance(obj, Inert):
      self.memo[id(obj)] = obj
      obj.args, obj.kwargs, obj.state = self(obj.args), self(obj.kwargs), self(obj.state)
      obj.dict_items, obj.list_items = self(obj.dict_items), self(obj.list_items)
      out = obj
    else:
      out = obj
    return out


def _materialize(obj: Any, source: str = 'checkpoint', placeholders: bool = False) -> Any:
  """Replaces every stand-in in nested containers by its numpy array (see _Materializer)."""
  return _Materializer(source, placeholders)(obj)


def _load_zip(path: str, raw: bytes, placeholders: bool) -> Any:
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
    unpickler = _SafeUnpickler(io.BytesIO(archive.read(pickles[0])), path, legacy=False,
                               placeholders=placeholders)
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
  return _materialize(result, path, placeholders)


def _load_legacy(path: str, stream: BinaryIO, placeholders: bool) -> Any:
  def header() -> Any:
    return _SafeUnpickler(stream, path, legacy=True).load()

  if header() != _LEGACY_MAGIC:
    raise pickle.UnpicklingError(f'{path}: not a PyTorch file (bad magic number)')
  if header() != _LEGACY_PROTOCOL:
    raise pickle.UnpicklingError(f'{path}: unsupported legacy protocol version')
  sys_info = header()
  if isinstance(sys_info, dict) and not sys_info.get('little_endian', True):
    raise pickle.UnpicklingError(f'{path}: big-endian legacy files are not supported')
  unpickler = _SafeUnpickler(stream, path, legacy=True, placeholders=placeholders)
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
  return _materialize(result, path, placeholders)


def load(path: str | os.PathLike, *, placeholders: bool = False) -> Any:
  """Reads a ``torch.save`` file into dicts, lists and numpy arrays, running no code from it.

  Strict by default: a global outside the allow-list raises ``UnsafeCheckpointError``. With
  ``placeholders=True`` such globals are read as ``Inert`` placeholders instead (see the
  module docstring); the caller then checks with ``find_inert`` the part it takes data from.
  """
  path = os.fspath(path)
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except FileNotFoundError:
    raise errors.MissingFileError(f'checkpoint file not found: {path}') from None
  try:
    if zipfile.is_zipfile(io.BytesIO(raw)):
      return _load_zip(path, raw, placeholders)
    return _load_legacy(path, io.BytesIO(raw), placeholders)
  except UnsafeCheckpointError:
    raise
  except _Unsupported as e:
    raise UnsafeCheckpointError(f'{path}: {e}; refusing to load it (nothing from the file was '
                                f'run)') from None
  except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, ValueError,
          KeyError, IndexError, TypeError, AttributeError, OverflowError, RecursionError) as e:
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
