"""Official PyTorch HRNet weights to Flax variables and back, without torch.

A Flax variable path maps to exactly one official state_dict key: module path segments are
joined with '.', with ``name_3`` read as ``name.3``; the leaf names translate as
conv ``kernel`` <-> ``weight`` (HWIO <-> OIHW), BatchNorm ``scale``/``bias`` <-> ``weight``/``bias``
and batch statistics ``mean``/``var`` <-> ``running_mean``/``running_var``. The official
``num_batches_tracked`` counters have no use at inference or in Flax's BatchNorm and are dropped.
"""

from __future__ import annotations

import collections
import os
import re
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hrnet_jax import errors, models, torch_pickle

Variables = dict[str, Any]

# Top-level modules of the backbone that ImageNet-pretrained HRNets share with the pose models
# (the official PRETRAINED_LAYERS).
BACKBONE_PREFIXES = ('conv1', 'bn1', 'conv2', 'bn2', 'layer1', 'transition1', 'stage2',
                     'transition2', 'stage3', 'transition3', 'stage4')
# Top-level modules that only ImageNet classification HRNets have.
CLASSIFIER_PREFIXES = ('classifier', 'incre_modules', 'downsamp_modules')
_COUNTER = 'num_batches_tracked'
_LIST_LIMIT = 25


class CheckpointMismatchError(errors.UserError):
  """A checkpoint's keys or shapes do not match the model; lists every offending key."""

  def __init__(self, source: str, missing=(), unexpected=(), misshaped=()):
    self.source, self.missing = source, list(missing)
    self.unexpected, self.misshaped = list(unexpected), list(misshaped)
    parts = [f'{source} does not match the model:']
    for title, items in (('missing from the checkpoint', self.missing),
                         ('not in the model', self.unexpected),
                         ('of the wrong shape (checkpoint vs model)', self.misshaped)):
      if items:
        shown = [i if isinstance(i, str) else f'{i[0]}: {i[1]} vs {i[2]}'
                 for i in items[:_LIST_LIMIT]]
        more = f'\n    ... and {len(items) - _LIST_LIMIT} more' if len(items) > _LIST_LIMIT else ''
        parts.append(f'  {len(items)} key(s) {title}:\n    ' + '\n    '.join(shown) + more)
    super().__init__('\n'.join(parts))


def torch_key(collection: str, path: tuple[str, ...], ndim: int) -> str:
  """The official state_dict key of the Flax variable ``collection/path``."""
  *modules, leaf = path
  prefix = '.'.join(re.sub(r'_(\d+)', r'.\1', m) for m in modules)
  if collection == 'batch_stats':
    name = {'mean': 'running_mean', 'var': 'running_var'}[leaf]
  elif leaf == 'kernel':
    name = 'weight'
  elif leaf == 'scale':
    name = 'weight'
  elif leaf == 'bias':
    name = 'bias'
  else:
    raise KeyError(f'no official name for variable {collection}/{"/".join(path)}')
  return f'{prefix}.{name}' if prefix else name


def _to_torch_layout(array: np.ndarray) -> np.ndarray:
  return np.transpose(array, (3, 2, 0, 1)) if array.ndim == 4 else array  # HWIO -> OIHW


def _from_torch_layout(array: np.ndarray, ndim: int) -> np.ndarray:
  return np.transpose(array, (2, 3, 1, 0)) if ndim == 4 else array  # OIHW -> HWIO


def variable_shapes(config: ml_collections.ConfigDict) -> Variables:
  """The model's variables as ``jax.ShapeDtypeStruct`` (nothing is computed)."""
  model = models.create_model(config)
  size = models.INPUT_MULTIPLE * 2
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
  return flax.core.unfreeze(shapes)


def key_map(shapes: Variables) -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
  """Official key -> (collection, Flax path, Flax shape) for every variable of a model."""
  out = {}
  for collection in ('params', 'batch_stats'):
    flat = flax.traverse_util.flatten_dict(shapes.get(collection, {}))
    for path, leaf in flat.items():
      key = torch_key(collection, path, len(leaf.shape))
      if key in out:
        raise AssertionError(f'two variables map to {key}')
      out[key] = (collection, path, tuple(leaf.shape))
  return out


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The state_dict of an official checkpoint: plain, ``{'state_dict': ...}``, ``module.``."""
  obj = torch_pickle.load(path)
  if isinstance(obj, Mapping) and isinstance(obj.get('state_dict'), Mapping):
    obj = obj['state_dict']
  if not isinstance(obj, Mapping):
    raise errors.UserError(f'{path}: expected a state_dict (a dict of tensors) or a training '
                           f'checkpoint with a "state_dict" entry, got {type(obj).__name__}')
  state = collections.OrderedDict()
  for key, value in obj.items():
    if not isinstance(key, str) or not isinstance(value, np.ndarray):
      raise errors.UserError(f'{path}: entry {key!r} is not a tensor ({type(value).__name__})')
    state[key[len('module.'):] if key.startswith('module.') else key] = value
  return state


def _bn_prefixes(mapping) -> set[str]:
  return {k.rsplit('.', 1)[0] for k in mapping if k.endswith('.running_mean')}


def state_dict_to_variables(state: Mapping[str, np.ndarray], config: ml_collections.ConfigDict,
                            *, source: str = 'state_dict',
                            prefixes: tuple[str, ...] | None = None,
                            base: Variables | None = None) -> tuple[Variables, list[str]]:
  """Maps an official state_dict onto the model's variables.

  With ``prefixes``, only keys under those top-level modules are taken (the rest of the
  checkpoint is returned as unused) and the model's other variables come from ``base``.
  Without, every key must match: missing, unexpected and mis-shaped keys raise
  ``CheckpointMismatchError``, naming them.
  """
  mapping = key_map(variable_shapes(config))

  def wanted(key: str) -> bool:
    return prefixes is None or key.split('.', 1)[0] in prefixes

  bn_prefixes = _bn_prefixes(mapping)
  unused, unexpected, misshaped = [], [], []
  flat: dict[tuple[str, ...], np.ndarray] = {}
  for key, value in state.items():
    if not wanted(key):
      unused.append(key)
    elif key.endswith('.' + _COUNTER) and key.rsplit('.', 1)[0] in bn_prefixes:
      continue
    elif key not in mapping:
      (unused if prefixes is not None else unexpected).append(key)
    else:
      collection, path, shape = mapping[key]
      array = _from_torch_layout(np.asarray(value), len(shape))
      if array.shape != shape:
        misshaped.append((key, tuple(value.shape), tuple(_to_torch_layout(np.empty(shape)).shape)))
      else:
        flat[(collection,) + path] = array.astype(np.float32)
  misshaped_keys = {m[0] for m in misshaped}
  missing = [k for k, (c, p, _) in mapping.items()
             if wanted(k) and (c,) + p not in flat and k not in misshaped_keys]
  if missing or unexpected or misshaped:
    raise CheckpointMismatchError(source, missing, unexpected, misshaped)
  if prefixes is not None:
    if base is None:
      raise ValueError('base variables are needed when loading only some layers')
    merged = flax.traverse_util.flatten_dict(flax.core.unfreeze(base))
    merged.update(flat)
    flat = merged
  variables = flax.traverse_util.unflatten_dict(flat)
  loaded = {c: variables.get(c, {}) for c in ('params', 'batch_stats')}
  return loaded, unused


def load_torch_checkpoint(path: str | os.PathLike, config: ml_collections.ConfigDict) -> Variables:
  """Loads an official checkpoint (.pth) as ``{'params': ..., 'batch_stats': ...}``; strict."""
  state = read_state_dict(path)
  source = os.fspath(path)
  if is_classification_checkpoint(state):
    source += (' (an ImageNet classification checkpoint: take its backbone with '
               'load_pretrained_backbone, or --config.init_from in training)')
  variables, _ = state_dict_to_variables(state, config, source=source)
  return variables


def is_classification_checkpoint(state: Mapping[str, np.ndarray]) -> bool:
  """Whether a state_dict has the head of an ImageNet classification HRNet."""
  return any(k.split('.', 1)[0] in CLASSIFIER_PREFIXES for k in state)


def load_pretrained_backbone(path: str | os.PathLike, config: ml_collections.ConfigDict,
                             variables: Variables) -> tuple[Variables, dict[str, list[str]]]:
  """Takes the backbone of an ImageNet-pretrained HRNet into ``variables``.

  Returns the new variables and a report: ``unused`` checkpoint keys (classifier head, extra
  fuse layers, ...) and ``kept`` model variables left as initialised (the pose head).
  """
  state = read_state_dict(path)
  loaded, unused = state_dict_to_variables(state, config, source=os.fspath(path),
                                           prefixes=BACKBONE_PREFIXES, base=variables)
  mapping = key_map(variable_shapes(config))
  kept = [k for k in mapping if k.split('.', 1)[0] not in BACKBONE_PREFIXES]
  return loaded, {'unused': unused, 'kept': kept}


def variables_to_state_dict(variables: Variables) -> collections.OrderedDict:
  """The official state_dict (numpy, OIHW) of Flax variables, with zeroed BN counters."""
  state = collections.OrderedDict()
  for collection in ('params', 'batch_stats'):
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables.get(collection, {})))
    for path, value in flat.items():
      array = np.asarray(value, dtype=np.float32)
      state[torch_key(collection, path, array.ndim)] = _to_torch_layout(array)
  for prefix in sorted(_bn_prefixes(state)):
    state[f'{prefix}.{_COUNTER}'] = np.zeros((), np.int64)
  return state


def save_torch_checkpoint(variables: Variables, path: str | os.PathLike) -> None:
  """Writes Flax variables as an official-layout state_dict ``.pth`` that torch loads."""
  torch_pickle.save_state_dict(variables_to_state_dict(variables), path)
