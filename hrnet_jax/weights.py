"""Official PyTorch HRNet weights to Flax variables and back, without torch.

A Flax variable path maps to exactly one official state_dict key: module path segments are
joined with '.', with ``name_3`` read as ``name.3``; the leaf names translate as
conv ``kernel`` <-> ``weight`` (HWIO <-> OIHW), BatchNorm ``scale``/``bias`` <-> ``weight``/``bias``
and batch statistics ``mean``/``var`` <-> ``running_mean``/``running_var``. The official
``num_batches_tracked`` counters have no use at inference or in Flax's BatchNorm and are dropped.

Key layouts
-----------
Files are read in one of ``LAYOUTS`` (detected from the keys, or required by the caller) and
renamed to the official keys; errors name keys as the file names them.

* ``official``: leoxiaobin/deep-high-resolution-net.pytorch ``lib/models/pose_hrnet.py`` (and
  the official HigherHRNet): ``conv1.weight``, ``layer1.0.bn1.running_mean``, ...,
  ``final_layer.weight``.
* ``imagenet``: an ImageNet classification HRNet: official backbone keys plus ``classifier``,
  ``incre_modules``, ``downsamp_modules`` (only its backbone is taken, see
  ``load_pretrained_backbone``).
* ``mmpose0``: mmpose 0.x ``TopDown`` + ``TopdownHeatmapSimpleHead``: ``backbone.<official
  key>`` and ``keypoint_head.final_layer.{weight,bias}``.
* ``mmpose1``: mmpose 1.x ``TopdownPoseEstimator`` + ``HeatmapHead``: ``backbone.<official
  key>`` and ``head.final_layer.{weight,bias}``; the ``data_preprocessor.mean``/``.std``
  buffers that some 1.x files carry are set aside (``StateDict.dropped``), as mmpose's own
  ``BasePoseEstimator._load_state_dict_pre_hook`` deletes them: they are the input
  normalisation of the config (mmpose's ``mean=[123.675, 116.28, 103.53]``,
  ``std=[58.395, 57.12, 57.375]`` on 0-255 RGB = the official ImageNet normalisation x 255),
  not weights.

Why mmpose's HRNet is the official one renamed (mmpose ``mmpose/models/backbones/hrnet.py``,
identical in structure at v0.29.0 and 1.x HEAD; ``resnet.py``; mmcv ``build_norm_layer``):

* prefixes: ``TopDown.__init__`` sets ``self.backbone`` and ``self.keypoint_head`` (0.x
  ``mmpose/models/detectors/top_down.py``); ``BasePoseEstimator.__init__`` sets
  ``self.backbone``, ``self.head`` (1.x ``mmpose/models/pose_estimators/base.py``); a pose
  model's keys are ``backbone.*`` and ``{keypoint_,}head.*``.
* stem: ``HRNet`` builds ``conv1``, ``conv2`` (3x3, stride 2, no bias) and norms named by
  ``build_norm_layer(norm_cfg, 64, postfix=1|2)``, i.e. ``infer_abbr(BatchNorm2d) + postfix``
  = ``bn1``/``bn2`` (mmcv ``cnn/bricks/norm.py``: ``name = abbr + str(postfix)``, ``'bn'`` for
  ``_BatchNorm``; eps 1e-5, momentum torch's 0.1, as the official ``nn.BatchNorm2d``).
* blocks: mmpose ``BasicBlock`` = ``conv1``/``bn1``/``conv2``/``bn2``/``downsample``;
  ``Bottleneck`` = ``conv1``/``bn1``/``conv2``/``bn2``/``conv3``/``bn3``/``downsample``, norms
  named ``norm{1,2,3}_name`` = ``bn{1,2,3}``; with ``style='pytorch'`` (the default) the stride
  is on ``conv2`` as in the official ``Bottleneck``; mid channels = out / expansion (4), the
  official ``planes``. ``downsample`` = ``Sequential(conv 1x1, BN)`` -> ``.0``/``.1`` in both.
* ``layer1`` = ``_make_layer(Bottleneck, 64, 256, 4)``: ``Sequential`` of blocks, ``layer1.i``.
* transitions: ``_make_transition_layer`` is line for line the official one: ``ModuleList``
  with ``None`` where channels match, ``Sequential(conv 3x3, BN, ReLU)`` where they differ,
  and for new branches ``Sequential`` of ``Sequential(conv 3x3 s2, BN, ReLU)`` from the last
  branch: keys ``transitionN.i.0.*``/``.1.*`` and ``transitionN.i.j.0.*``/``.j.1.*``.
* stages: ``_make_stage`` -> ``Sequential`` of ``HRModule`` (``stageN.k``), each with
  ``branches`` (``ModuleList`` of ``Sequential`` of blocks: ``branches.b.i``) and
  ``fuse_layers`` (``ModuleList`` of ``ModuleList``): j > i ``Sequential(conv 1x1, BN,
  Upsample)``, j == i ``None``, j < i ``Sequential`` of ``Sequential(conv 3x3 s2, BN[, ReLU])``
  with the ReLU on all but the last; the same as the official ``_make_fuse_layers`` (keys
  ``fuse_layers.i.j.0``/``.1`` and ``fuse_layers.i.j.k.0``/``.1``). mmpose's forward sums
  ``y = 0 + x_j or fuse(x_j)`` over j in order, the official ``y = x_0 or fuse(x_0)`` then
  ``+ ...``: the same sum.
* stage 4: ``multiscale_output=self.stage4_cfg.get('multiscale_output', False)`` and, as the
  official ``multi_scale_output=False``, only the last module is built with one output
  branch (``fuse_layers.0`` only). A config with ``multiscale_output=True`` would add
  ``stage4.<last>.fuse_layers.{1,2,3}``: those keys are then named as not in the model.
* head: with HRNet configs ``num_deconv_layers=0`` (0.x) / ``deconv_out_channels=None``
  (1.x) make ``deconv_layers`` an ``nn.Identity`` (no keys); with no ``num_conv_layers`` /
  ``conv_out_channels`` ``final_layer`` is the bare ``Conv2d`` (``final_conv_kernel`` 1,
  padding 0; or 3, padding 1, as the official) on feature 0, the only one stage 4 returns:
  ``{keypoint_,}head.final_layer.{weight,bias}`` = official ``final_layer.{weight,bias}``.
  Heads with deconvolutions or extra convolutions (``keypoint_head.final_layer.N.*``,
  ``head.deconv_layers.*``, ``head.conv_layers.*``) have no place in this model: strict loading
  names them. The losses (``JointsMSELoss``, ``KeypointMSELoss``) have no parameters.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Any, Iterable, Mapping

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
# The same head as the ImageNet files mmpose hosts name it (hrnet_w32-36af842e.pth,
# hrnet_w48-8ef0771d.pth: official backbone keys beside ``head.0.0.0.conv1.weight``, ...,
# as mmpose's load warnings list them, e.g. open-mmlab/mmpose#1054, #1450).
_HOSTED_CLASSIFIER_PREFIXES = ('head', 'fc')
_COUNTER = 'num_batches_tracked'
_LIST_LIMIT = 25


# Layout name -> what it is (for messages).
LAYOUTS = {
    'official': 'official HRNet keys: conv1.weight, ..., final_layer.weight',
    'imagenet': 'an ImageNet classification HRNet: official keys plus classifier, '
                'incre_modules, downsamp_modules (or head.*, fc.*)',
    'mmpose0': 'mmpose 0.x TopDown: backbone.*, keypoint_head.final_layer.*',
    'mmpose1': 'mmpose 1.x TopdownPoseEstimator: backbone.*, head.final_layer.*',
}
# Layout -> (file prefix, official prefix) renames, tried in order.
_RENAMES = {
    'official': (),
    'imagenet': (),
    'mmpose0': (('keypoint_head.final_layer.', 'final_layer.'), ('backbone.', '')),
    'mmpose1': (('head.final_layer.', 'final_layer.'), ('backbone.', '')),
}
# Keys that a layout's files may carry and that are no weights of the model (set aside).
_SET_ASIDE = {'mmpose1': ('data_preprocessor.mean', 'data_preprocessor.std')}
_MMPOSE_TOPS = ('backbone', 'keypoint_head', 'head', 'data_preprocessor')


class LayoutError(errors.UserError):
  """A checkpoint's key layout is not the one required, or not one that can be told."""


class StateDict(collections.OrderedDict):
  """A state_dict under the official keys that remembers the file's own names.

  ``layout``: the file's key layout (a key of ``LAYOUTS``); ``renamed``: official key ->
  the file's key, for every key whose name changed; ``dropped``: the file's tensors that are
  set aside by design (mmpose 1.x's ``data_preprocessor`` buffers); ``unplaced``: the file's
  keys that would land on an official key another of its tensors already has (reported as
  not in the model by ``state_dict_to_variables``).
  """

  def __init__(self, *args, layout: str = 'official', **kwargs):
    super().__init__(*args, **kwargs)
    self.layout = layout
    self.renamed: dict[str, str] = {}
    self.dropped: dict[str, np.ndarray] = collections.OrderedDict()
    self.unplaced: list[str] = []

  def file_name(self, key: str) -> str:
    """The name in the file of the official ``key`` (of a key it lacks: the name it would
    have there)."""
    if key in self.renamed:
      return self.renamed[key]
    if key in self:
      return key
    return official_to_layout(key, self.layout)


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


def official_to_layout(key: str, layout: str) -> str:
  """The name an official key has in a file of ``layout``."""
  for file_prefix, official_prefix in _RENAMES[layout]:
    if key.startswith(official_prefix):
      return file_prefix + key[len(official_prefix):]
  return key


def layout_candidates(keys) -> list[str]:
  """The layouts that a state_dict's keys fit, best first (``LayoutError`` if none)."""
  tops = {k.split('.', 1)[0] for k in keys}
  if tops & set(BACKBONE_PREFIXES) and tops & set(_HOSTED_CLASSIFIER_PREFIXES):
    return ['imagenet']  # official backbone keys at the top and a classification head
  if tops & set(_MMPOSE_TOPS):
    if 'keypoint_head' in tops and tops & {'head', 'data_preprocessor'}:
      raise LayoutError('the keys mix mmpose 0.x (keypoint_head.*) and mmpose 1.x (head.*, '
                        'data_preprocessor.*) names')
    if 'keypoint_head' in tops:
      return ['mmpose0']
    if tops & {'head', 'data_preprocessor'}:
      return ['mmpose1']
    return ['mmpose1', 'mmpose0']  # backbone only: either
  if tops & set(CLASSIFIER_PREFIXES):
    return ['imagenet']
  return ['official']


def detect_layout(state: Mapping[str, Any]) -> str:
  """The key layout of a state_dict: one of ``LAYOUTS``."""
  return layout_candidates(state)[0]


def _required(layout: str | Iterable[str] | None) -> tuple[str, ...] | None:
  if layout is None:
    return None
  required = (layout,) if isinstance(layout, str) else tuple(layout)
  unknown = [name for name in required if name not in LAYOUTS]
  if unknown or not required:
    raise ValueError(f'unknown key layout {unknown or layout!r}; expected one of '
                     f'{", ".join(LAYOUTS)}')
  return required


def to_official_keys(state: Mapping[str, np.ndarray],
                     layout: str | Iterable[str] | None = None, *,
                     source: str = 'state_dict') -> StateDict:
  """Renames a state_dict of any of ``LAYOUTS`` to the official keys.

  ``layout``: None detects it; a layout name (or several) requires it and raises
  ``LayoutError`` naming the expected and the found layout otherwise. Keys outside the
  layout's renamed prefixes keep their names (and so are named as not in the model by a
  strict load).
  """
  try:
    candidates = layout_candidates(state)
  except LayoutError as e:
    raise LayoutError(f'{source}: {e}') from None
  required = _required(layout)
  if required is None:
    found = candidates[0]
  else:
    matching = [c for c in candidates if c in required]
    if not matching:
      expected = ' or '.join(f'{r} ({LAYOUTS[r]})' for r in required)
      raise LayoutError(f'{source}: expected a checkpoint in the {expected} key layout, '
                        f'found the {candidates[0]} layout ({LAYOUTS[candidates[0]]})')
    found = matching[0]
  out = StateDict(layout=found)
  renames = _RENAMES[found]
  set_aside = _SET_ASIDE.get(found, ())
  kept = []
  for key, value in state.items():
    if key in set_aside:
      out.dropped[key] = value
      continue
    for file_prefix, official_prefix in renames:
      if key.startswith(file_prefix):
        new = official_prefix + key[len(file_prefix):]
        out[new] = value
        out.renamed[new] = key
        break
    else:
      kept.append(key)
  for key in kept:  # unrenamed keys never displace a renamed one
    if key in out:
      out.unplaced.append(key)
    else:
      out[key] = state[key]
  return out


@dataclasses.dataclass
class Checkpoint:
  """A checkpoint file read as data: its weights, and what else it holds.

  ``state_dict``: the weights under the official keys (see ``StateDict``); ``meta``: the
  file's ``meta`` entry (mmpose, mmcv and mmengine runners: versions, config text, dataset
  metadata with numpy arrays), None if it has none; ``extra``: its other top-level entries
  (``optimizer``, ``message_hub``, ``epoch``, ...). Outside the state_dict, objects of
  classes that are not read (mmengine's ``HistoryBuffer``, ``ConfigDict``, ...) are
  ``torch_pickle.Inert`` placeholders: records of what the file asked for, nothing run.
  """

  path: str
  state_dict: StateDict
  meta: Any = None
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def layout(self) -> str:
    return self.state_dict.layout


def _refuse_placeholders(path: str, what: str, obj: Any) -> None:
  names = torch_pickle.find_inert(obj)
  if names:
    raise torch_pickle.UnsafeCheckpointError(
        f'{path}: {what} asks for the global(s) {", ".join(names)}, which are not tensor or '
        f'container types; refusing to load it (nothing from the file was run)')


def read_checkpoint(path: str | os.PathLike,
                    layout: str | Iterable[str] | None = None) -> Checkpoint:
  """Reads a checkpoint: plain state_dict, ``{'state_dict': ..., 'meta': ..., ...}``.

  Runs nothing from the file. The state_dict (or the top-level object, if it is the
  state_dict) must hold only tensors: any other global there raises ``UnsafeCheckpointError``
  naming it. Elsewhere (``meta``, ``message_hub``, ...) other globals become inert
  placeholders. ``module.`` prefixes (DataParallel) are removed; ``layout`` as in
  ``to_official_keys``.
  """
  path = os.fspath(path)
  obj = torch_pickle.load(path, placeholders=True)
  if torch_pickle.is_inert(obj):
    _refuse_placeholders(path, 'the checkpoint', obj)
  meta, extra = None, {}
  if isinstance(obj, Mapping) and 'state_dict' in obj:
    _refuse_placeholders(path, 'the state_dict', obj['state_dict'])
    if not isinstance(obj['state_dict'], Mapping):
      raise errors.UserError(f'{path}: its "state_dict" entry is not a dict of tensors '
                             f'({type(obj["state_dict"]).__name__})')
    meta = obj.get('meta')
    extra = {k: v for k, v in obj.items() if k not in ('state_dict', 'meta')}
    obj = obj['state_dict']
  _refuse_placeholders(path, 'the state_dict', obj)
  if not isinstance(obj, Mapping):
    raise errors.UserError(f'{path}: expected a state_dict (a dict of tensors) or a training '
                           f'checkpoint with a "state_dict" entry, got {type(obj).__name__}')
  state = collections.OrderedDict()
  for key, value in obj.items():
    if not isinstance(key, str) or not isinstance(value, np.ndarray):
      raise errors.UserError(f'{path}: entry {key!r} is not a tensor ({type(value).__name__})')
    state[key[len('module.'):] if key.startswith('module.') else key] = value
  return Checkpoint(path, to_official_keys(state, layout, source=path), meta, extra)


def read_state_dict(path: str | os.PathLike,
                    layout: str | Iterable[str] | None = None) -> StateDict:
  """The state_dict of a checkpoint under the official keys (see ``read_checkpoint``)."""
  return read_checkpoint(path, layout).state_dict


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
  ``CheckpointMismatchError``, naming them. Given a ``StateDict`` (``read_state_dict``),
  keys are named (in the error and in the unused list) as its file names them.
  """
  mapping = key_map(variable_shapes(config))
  name = state.file_name if isinstance(state, StateDict) else (lambda key: key)
  unplaced = list(state.unplaced) if isinstance(state, StateDict) else []

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
  unused = [name(k) for k in unused] + (unplaced if prefixes is not None else [])
  unexpected = [name(k) for k in unexpected] + (unplaced if prefixes is None else [])
  if missing or unexpected or misshaped:
    raise CheckpointMismatchError(source, [name(k) for k in missing], unexpected,
                                  [(name(k), a, b) for k, a, b in misshaped])
  if prefixes is not None:
    if base is None:
      raise ValueError('base variables are needed when loading only some layers')
    merged = flax.traverse_util.flatten_dict(flax.core.unfreeze(base))
    merged.update(flat)
    flat = merged
  variables = flax.traverse_util.unflatten_dict(flat)
  loaded = {c: variables.get(c, {}) for c in ('params', 'batch_stats')}
  return loaded, unused


def load_torch_checkpoint(path: str | os.PathLike, config: ml_collections.ConfigDict, *,
                          layout: str | Iterable[str] | None = None) -> Variables:
  """Loads a checkpoint (.pth) as ``{'params': ..., 'batch_stats': ...}``; strict.

  Official and mmpose (0.x, 1.x) top-down files alike: every tensor has exactly one home;
  missing, extra and mis-shaped keys are named as the file names them. ``layout``: None
  detects the key layout, a name of ``LAYOUTS`` (or several) requires it (``LayoutError``).
  """
  state = read_state_dict(path, layout)
  source = os.fspath(path)
  if is_classification_checkpoint(state):
    source += (' (an ImageNet classification checkpoint: take its backbone with '
               'load_pretrained_backbone, or --config.init_from in training)')
  elif state.layout != 'official':
    source += f' ({state.layout} key layout: {LAYOUTS[state.layout]})'
  variables, _ = state_dict_to_variables(state, config, source=source)
  return variables


def is_classification_checkpoint(state: Mapping[str, np.ndarray]) -> bool:
  """Whether a state_dict has the head of an ImageNet classification HRNet."""
  if isinstance(state, StateDict):
    return state.layout == 'imagenet'
  return detect_layout(state) == 'imagenet'


def load_pretrained_backbone(path: str | os.PathLike, config: ml_collections.ConfigDict,
                             variables: Variables, *,
                             layout: str | Iterable[str] | None = None
                             ) -> tuple[Variables, dict[str, list[str]]]:
  """Takes the backbone of an ImageNet-pretrained HRNet (or of any layout) into ``variables``.

  Returns the new variables and a report: ``unused`` checkpoint keys (classifier head, extra
  fuse layers, ...) and ``kept`` model variables left as initialised (the pose head).
  """
  state = read_state_dict(path, layout)
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
