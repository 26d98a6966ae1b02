r"""Makes tests/fixtures/mmpose/: the official small fixture model saved as mmpose saves it.

Not run by the tests (it needs torch): it documents how those fixtures were made.

    pip install torch numpy && python tests/reference/make_mmpose_fixture.py

The weights are those of ``tests/fixtures/official_hrnet/small_hrnet.pth`` (so the files must
reproduce ``small_hrnet_io.npz``), renamed to mmpose's module names (see the docstring of
``hrnet_jax.weights`` for the evidence that this is a pure rename) and written with the real
``torch.save``:

* ``small_hrnet_mmpose0.pth``: mmpose 0.x (``TopDown`` + ``TopdownHeatmapSimpleHead``):
  ``backbone.*`` and ``keypoint_head.final_layer.*``; the zip format of ``torch.save`` (what
  0.x's ``tools/misc/publish_model.py`` wrote) and numpy arrays pickled under numpy 1.x's
  names (``numpy.core.multiarray._reconstruct``); its ``meta`` is an mmcv runner's (version
  strings, config text, ``hook_msgs`` with a numpy best score), plus dataset metadata, an
  ``mmcv.utils.config.ConfigDict`` and a ``collections.defaultdict``.
* ``small_hrnet_mmpose1.pth``: mmpose 1.x (``TopdownPoseEstimator`` + ``HeatmapHead``):
  ``backbone.*``, ``head.final_layer.*`` and the ``data_preprocessor.mean``/``std`` buffers
  that some 1.x files carry (mmpose's ``BasePoseEstimator._load_state_dict_pre_hook`` deletes
  them on load); the legacy format (1.x's ``publish_model.py`` saves with
  ``_use_new_zipfile_serialization=False``) and numpy 2's names
  (``numpy._core.multiarray._reconstruct``); its ``meta`` is an mmengine runner's
  (``cfg`` text, ``mmengine_version``, ``dataset_meta`` with numpy arrays) plus an
  ``mmengine.logging.history_buffer.HistoryBuffer`` and an
  ``mmengine.config.config.ConfigDict``, and a top-level ``message_hub`` entry (as mmengine's
  runner writes before publishing strips it) holding more HistoryBuffers.

Both state_dicts carry torch's ``_metadata`` (module versions) as ``model.state_dict()`` does.
mmcv and mmengine are not needed: stand-ins of their classes, with the real attribute layout
and pickling, are registered in ``sys.modules`` under the real module names for the time of
the save, so the pickles name the real globals.

Made with torch 2.13.0+cpu and numpy 2.4.6.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import pickle
import sys
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, '..', 'fixtures')
OFFICIAL = os.path.join(FIXTURES, 'official_hrnet')
OUT = os.path.join(FIXTURES, 'mmpose')


# ----------------------------------------------------------------- stand-in classes

class HistoryBuffer:
  """Stand-in of mmengine.logging.history_buffer.HistoryBuffer: its attributes and pickling."""

  _statistics_methods: dict = {}

  def __init__(self, log_history=(), count_history=(), max_length=1000000):
    self.max_length = max_length
    self._log_history = np.array(log_history)
    self._count_history = np.array(count_history)


class ConfigDict(dict):
  """Stand-in of mmengine.config.config.ConfigDict with its own ``__reduce_ex__``."""

  def __reduce_ex__(self, proto):
    return (self.__class__, ({k: v for k, v in self.items()},), None, None, None, None)


class McvConfigDict(dict):
  """Stand-in of mmcv.utils.config.ConfigDict, an ``addict.Dict``: a dict subclass whose
  ``__getstate__`` returns the object itself (so its pickle refers back to itself)."""

  def __getstate__(self):
    return self

  def __setstate__(self, state):
    self.update(state)


def _numpy1_reconstruct(*args):
  raise AssertionError('only pickled, never called')


def _numpy1_scalar(*args):
  raise AssertionError('only pickled, never called')


STAND_INS = {
    'mmengine.logging.history_buffer': {'HistoryBuffer': HistoryBuffer},
    'mmengine.config.config': {'ConfigDict': ConfigDict},
    'mmcv.utils.config': {'ConfigDict': McvConfigDict},
}
NUMPY1 = {'numpy.core.multiarray': {'_reconstruct': _numpy1_reconstruct,
                                    'scalar': _numpy1_scalar}}


@contextlib.contextmanager
def registered(modules: dict[str, dict[str, object]]):
  """Registers stand-in modules (and missing parents) in sys.modules for a while."""
  saved: dict[str, types.ModuleType | None] = {}
  try:
    for module, members in modules.items():
      parts = module.split('.')
      for i in range(1, len(parts)):
        parent = '.'.join(parts[:i])
        if parent not in sys.modules:
          saved.setdefault(parent, None)
          sys.modules[parent] = types.ModuleType(parent)
      saved.setdefault(module, sys.modules.get(module))
      stub = sys.modules[module] = types.ModuleType(module)
      for attr, obj in members.items():
        setattr(stub, attr, obj)
        obj.__module__, obj.__qualname__ = module, attr
        if isinstance(obj, types.FunctionType):
          obj.__name__ = attr
    yield
  finally:
    for name, module in saved.items():
      if module is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = module


class Numpy1Pickler(pickle.Pickler):
  """Pickles numpy arrays and scalars under numpy 1.x's names (``numpy.core.multiarray``)."""

  def reducer_override(self, obj):
    if type(obj) is np.ndarray:
      _, args, state = obj.__reduce__()
      return _numpy1_reconstruct, args, state
    if isinstance(obj, np.generic):
      _, args = obj.__reduce__()
      return _numpy1_scalar, args
    return NotImplemented


NUMPY1_PICKLE = types.SimpleNamespace(__name__='pickle', Pickler=Numpy1Pickler,
                                      dump=pickle.dump, load=pickle.load,
                                      Unpickler=pickle.Unpickler)


# ----------------------------------------------------------------- contents

COCO_NAMES = ['nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
              'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist',
              'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle']
COCO_SIGMAS = [.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107,
               .087, .087, .089, .089]
COCO_JOINT_WEIGHTS = [1., 1., 1., 1., 1., 1., 1., 1.2, 1.2, 1.5, 1.5, 1., 1., 1.2, 1.2, 1.5,
                      1.5]
COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
COCO_SKELETON = [(15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
                 (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
                 (3, 5), (4, 6)]


def dataset_meta() -> dict:
  """``parse_pose_metainfo`` of mmpose's coco.py, as a 1.x runner saves it in ``meta``."""
  return {
      'dataset_name': 'coco',
      'num_keypoints': 17,
      'keypoint_id2name': dict(enumerate(COCO_NAMES)),
      'keypoint_name2id': {n: i for i, n in enumerate(COCO_NAMES)},
      'upper_body_ids': list(range(11)),
      'lower_body_ids': list(range(11, 17)),
      'flip_indices': list(COCO_FLIP),
      'flip_pairs': [[i, j] for i, j in enumerate(COCO_FLIP) if i < j],
      'keypoint_colors': np.array([[51, 153, 255]] * 5 + [[0, 255, 0], [255, 128, 0]] * 6,
                                  dtype=np.uint8),
      'num_skeleton_links': len(COCO_SKELETON),
      'skeleton_links': list(COCO_SKELETON),
      'skeleton_link_colors': np.full((len(COCO_SKELETON), 3), 128, dtype=np.uint8),
      'dataset_keypoint_weights': np.array(COCO_JOINT_WEIGHTS, dtype=np.float32),
      'sigmas': np.array(COCO_SIGMAS, dtype=np.float32),
  }


def config_text(small: dict, version: int) -> str:
  """A short mmpose config for the small model (the ``cfg``/``config`` text of ``meta``)."""
  w, b, m = small['width'], small['blocks'], small['modules']
  stages = ''.join(
      f'            stage{s}=dict(num_modules={m[s - 2]}, num_branches={s}, block=\'BASIC\', '
      f'num_blocks={(b,) * s}, num_channels={tuple(w * 2**i for i in range(s))}),\n'
      for s in (2, 3, 4))
  head = ("    head=dict(type='HeatmapHead', in_channels={w}, out_channels={j}, "
          "deconv_out_channels=None),\n" if version == 1 else
          "    keypoint_head=dict(type='TopdownHeatmapSimpleHead', in_channels={w}, "
          "out_channels={j}, num_deconv_layers=0, extra=dict(final_conv_kernel={k})),\n")
  return (f"model = dict(\n    type='{'TopdownPoseEstimator' if version == 1 else 'TopDown'}',\n"
          "    backbone=dict(\n        type='HRNet',\n        in_channels=3,\n"
          "        extra=dict(\n            stage1=dict(num_modules=1, num_branches=1, "
          "block='BOTTLENECK', num_blocks=(4, ), num_channels=(64, )),\n" + stages +
          "        )),\n" + head.format(w=w, j=small['joints'], k=small['final_kernel']) + ")\n")


def mmpose_state_dict(official: collections.OrderedDict, version: int):
  """The official state_dict under mmpose's names, with torch's ``_metadata``."""
  head = 'keypoint_head' if version == 0 else 'head'
  state = collections.OrderedDict()
  if version == 1:
    state['data_preprocessor.mean'] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    state['data_preprocessor.std'] = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
  for key, value in official.items():
    new = f'{head}.{key}' if key.startswith('final_layer.') else f'backbone.{key}'
    state[new] = value.clone()
  # torch's per-module versions: BatchNorm 2, mmpose 1.x's estimator and HeatmapHead 2.
  prefixes = {''}
  for key in state:
    parts = key.split('.')[:-1]
    prefixes.update('.'.join(parts[:i]) for i in range(1, len(parts) + 1))
  metadata = collections.OrderedDict()
  for prefix in sorted(prefixes, key=lambda p: (p.count('.'), p)):
    bn = f'{prefix}.running_mean' in state
    metadata[prefix] = {'version': 2 if bn or (version == 1 and prefix in ('', 'head')) else 1}
  state._metadata = metadata
  return state


def main() -> None:
  print(f'torch {torch.__version__}, numpy {np.__version__}')
  official = torch.load(os.path.join(OFFICIAL, 'small_hrnet.pth'), map_location='cpu',
                        weights_only=True)
  with open(os.path.join(OFFICIAL, 'small_hrnet_config.json')) as f:
    small = json.load(f)
  os.makedirs(OUT, exist_ok=True)

  with registered(STAND_INS):
    log = collections.defaultdict(list)
    log['coco/AP'] += [0.31, 0.35]
    meta0 = {
        'env_info': 'sys.platform: linux\nPython: 3.8.13\nPyTorch: 1.10.0\nMMCV: 1.7.0',
        'seed': 0,
        'config': config_text(small, 0),
        'mmpose_version': '0.29.0',
        'mmcv_version': '1.7.0',
        'time': 'Mon Oct 10 12:00:00 2022',
        'epoch': 210,
        'iter': 491400,
        'hook_msgs': {'last_ckpt': 'work_dirs/epoch_210.pth', 'best_score': np.float64(0.7468),
                      'best_ckpt': 'work_dirs/best_AP_epoch_200.pth'},
        'dataset_meta': dataset_meta(),
        'test_cfg': McvConfigDict(flip_test=True, post_process='default', shift_heatmap=True),
        'log_history': log,
    }
    with registered(NUMPY1):
      path0 = os.path.join(OUT, 'small_hrnet_mmpose0.pth')
      torch.save({'meta': meta0, 'state_dict': mmpose_state_dict(official, 0)}, path0,
                 pickle_module=NUMPY1_PICKLE)

    meta1 = {
        'cfg': config_text(small, 1),
        'seed': 21,
        'experiment_name': 'td-hm_small-hrnet_coco',
        'time': '20240101_120000',
        'mmengine_version': '0.10.3',
        'mmpose_version': '1.3.1',
        'epoch': 210,
        'iter': 491400,
        'dataset_meta': dataset_meta(),
        'loss_history': HistoryBuffer([0.0012, 0.0011, 0.0010], [64, 64, 64]),
        'test_cfg': ConfigDict(flip_test=True, flip_mode='heatmap', shift_heatmap=True),
    }
    message_hub = {
        'log_scalars': collections.OrderedDict([
            ('train/lr', HistoryBuffer([5e-4, 5e-5], [1, 1])),
            ('coco/AP', HistoryBuffer([0.7468], [1]))]),
        'runtime_info': collections.OrderedDict([('epoch', 210), ('iter', 491400)]),
        'resumed_keys': collections.OrderedDict([('train/lr', True), ('coco/AP', True)]),
    }
    path1 = os.path.join(OUT, 'small_hrnet_mmpose1.pth')
    torch.save({'meta': meta1, 'state_dict': mmpose_state_dict(official, 1),
                'message_hub': message_hub}, path1, _use_new_zipfile_serialization=False)

  for path in (path0, path1):
    print(f'{path}: {os.path.getsize(path):,} bytes')
  # torch reads them back as the same tensors (its full unpickler, with the stand-ins there).
  with registered(STAND_INS):
    for path, version in ((path0, 0), (path1, 1)):
      loaded = torch.load(path, map_location='cpu', weights_only=False)
      expected = mmpose_state_dict(official, version)
      assert list(loaded['state_dict']) == list(expected)
      for key, value in expected.items():
        assert torch.equal(loaded['state_dict'][key], value), key
      np.testing.assert_array_equal(loaded['meta']['dataset_meta']['sigmas'],
                                    np.float32(COCO_SIGMAS))


if __name__ == '__main__':
  main()
