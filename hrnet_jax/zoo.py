"""Pretrained models by name: where each comes from, its hash, recipe and published accuracy;
download, verify, convert once and cache.

``weights_path(spec)`` turns a zoo name, an https URL or a local path into a local checkpoint:
a download lands in ``<cache>/downloads/`` (``$HRNET_JAX_CACHE``, default
``~/.cache/hrnet_jax``) under a temporary name and is renamed only once its sha256 matches; a
pose model is then converted once to an orbax folder in ``<cache>/models/<name>/``, which
every later call reads with no network access. ``HRNET_JAX_OFFLINE=1`` (or ``offline=True``)
never downloads: a missing file is an error naming where to place it by hand.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import re
import shutil
import sys
import tempfile
from typing import Any, Callable, Mapping

from absl import logging
import ml_collections

from hrnet_jax import checkpoints, config_lib, errors, weights
from input_pipeline import datasets

OFFLINE_ENV = 'HRNET_JAX_OFFLINE'
DOWNLOADS_DIR = 'downloads'
MODELS_DIR = 'models'
KINDS = ('topdown', 'bottomup', 'backbone')
# torch.hub's and mmcv's convention: a file named NAME-<first hex digits of its sha256>.pth
_NAME_HASH = re.compile(r'-([a-f0-9]{8,64})(?:_\d{8})?\.pth$')
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class ZooModel:
  """A published checkpoint: where it comes from, what it is and what its publisher measured."""
  name: str
  kind: str  # one of KINDS
  file_name: str
  sha256: str | None  # full hex digest, or the prefix in the file name; None: not published
  recipe: str  # the recipe file of configs/ the weights belong to (before ``overrides``)
  build: Callable[[], ml_collections.ConfigDict]  # that recipe's config
  layout: str  # state_dict key layout (weights.LAYOUTS)
  url: str | None = None  # a direct download
  page: str | None = None  # else where to download it by hand (Google Drive, OneDrive)
  page_path: str = ''  # and the file's path there
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the test settings
  reported: Mapping[str, float] = dataclasses.field(default_factory=dict)
  reported_on: str = ''  # split, boxes and test of the reported numbers
  source: str = ''  # where the reported numbers are published
  num_params: int = 0  # parameters of the publisher's architecture

  def config(self) -> ml_collections.ConfigDict:
    """The recipe config with the publisher's test settings."""
    return config_lib.override(self.build(), dict(self.overrides))


MODELS: dict[str, ZooModel] = {}


def register(model: ZooModel) -> ZooModel:
  """Adds ``model`` to ``MODELS``; names are unique."""
  if model.name in MODELS:
    raise ValueError(f'zoo model {model.name!r} registered twice')
  if model.kind not in KINDS:
    raise ValueError(f'{model.name}: kind {model.kind!r} is not one of {KINDS}')
  if not (model.url or model.page):
    raise ValueError(f'{model.name}: neither a url nor a page to download from')
  MODELS[model.name] = model
  return model


def get(name: str) -> ZooModel:
  """The zoo model ``name``, or an error listing the closest names."""
  if name not in MODELS:
    close = difflib.get_close_matches(name, MODELS, n=3, cutoff=0.5)
    hint = f'; did you mean {", ".join(close)}?' if close else ''
    raise errors.UserError(f'{name!r} is not a zoo model, a URL or an existing path{hint} '
                           f'(zoo models: python -m hrnet_jax.zoo)')
  return MODELS[name]


def cache_dir() -> str:
  """``$HRNET_JAX_CACHE`` or ``~/.cache/hrnet_jax``."""
  return datasets.cache_dir()


def is_offline(offline: bool | None = None) -> bool:
  """``offline``, or else whether ``$HRNET_JAX_OFFLINE`` is set to 1/true/yes."""
  if offline is not None:
    return offline
  return os.environ.get(OFFLINE_ENV, '').strip().lower() in ('1', 'true', 'yes', 'on')


def file_sha256(path: str) -> str:
  """The sha256 hex digest of a file."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(_CHUNK), b''):
      digest.update(block)
  return digest.hexdigest()


def hash_from_url(url: str) -> str | None:
  """The sha256 prefix in a torch.hub / mmcv style file name (``name-1a2b3c4d.pth``)."""
  match = _NAME_HASH.search(url.split('?', 1)[0].split('#', 1)[0])
  return match.group(1) if match else None


def _check_hash(path: str, expected: str | None, what: str) -> str:
  """The file's sha256, after checking it starts with ``expected`` (full or prefix)."""
  actual = file_sha256(path)
  if expected and not actual.startswith(expected.lower()):
    raise errors.UserError(f'{what}: sha256 mismatch: expected {expected}, got {actual}')
  return actual


def download_to(url: str, destination: str, sha256: str | None) -> None:
  """Downloads ``url`` to ``destination`` through a temporary file renamed after the hash
  check, so no partial or wrong file is ever at ``destination``."""
  import pooch  # pylint: disable=g-import-not-at-top  (only a download needs it)
  folder = os.path.dirname(destination)
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(destination) + '.', suffix='.part',
                             dir=folder)
  os.close(fd)
  try:
    print(f'Downloading {url}\n  to {destination}', file=sys.stderr, flush=True)
    try:
      pooch.HTTPDownloader(progressbar=sys.stderr.isatty(), timeout=60)(url, tmp, None)
    except Exception as e:  # requests' errors: refused, dropped, HTTP status, timeout
      raise errors.UserError(
          f'could not download {url}: {type(e).__name__}: {e}. Download it by other means '
          f'and place it at {destination} (nothing was written there)') from e
    _check_hash(tmp, sha256, f'download of {url} (nothing was written to {destination})')
    os.replace(tmp, destination)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def download(url: str, *, sha256: str | None = None, file_name: str | None = None,
             offline: bool | None = None, page: str | None = None, page_path: str = '') -> str:
  """A verified local copy of ``url`` in the cache's downloads folder (downloaded if absent).

  ``sha256`` (full or prefix) defaults to the prefix in the file name; a URL with neither
  is refused. ``page`` instead of a usable ``url``: the file must be placed by hand.
  """
  file_name = file_name or os.path.basename(url.split('?', 1)[0].split('#', 1)[0])
  destination = os.path.join(cache_dir(), DOWNLOADS_DIR, file_name)
  sha256 = sha256 or (hash_from_url(url) if url else None)
  if os.path.exists(destination):
    actual = _check_hash(destination, sha256,
                         f'{destination} (in the cache: delete it to download it again)')
    if not sha256:
      logging.warning('%s: its publisher gives no hash; its sha256 is %s', destination, actual)
    return destination
  if not url:
    raise errors.MissingFileError(
        f'{file_name} is not downloadable directly: download {page_path or file_name} by hand '
        f'from {page} and place it at {destination} (or pass its path instead of the name)')
  if not sha256:
    raise errors.UserError(f'{url}: no sha256 to check the download against: pass one, or use '
                           f'a file name with its hash prefix (name-<sha256 prefix>.pth)')
  if is_offline(offline):
    raise errors.MissingFileError(
        f'{file_name} is not in the cache and downloads are off ({OFFLINE_ENV} or '
        f'offline=True): place the file from {url} at {destination}')
  download_to(url, destination, sha256)
  return destination


def _converted_dir(model: ZooModel) -> str:
  return os.path.join(cache_dir(), MODELS_DIR, model.name)


def _complete(folder: str) -> bool:
  return os.path.isfile(os.path.join(folder, checkpoints.METADATA_FILE))


def convert(model: ZooModel, pth: str) -> str:
  """The orbax folder of ``model`` converted from its .pth, written once (atomically)."""
  import jax  # pylint: disable=g-import-not-at-top
  folder = _converted_dir(model)
  if _complete(folder):
    return folder
  config = model.config()
  variables = weights.load_torch_checkpoint(pth, config.model, layout=model.layout)
  if jax.process_count() > 1:  # each process reads the .pth; no shared write
    return pth
  os.makedirs(os.path.dirname(folder), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{model.name}.', suffix='.tmp', dir=os.path.dirname(folder))
  os.rmdir(tmp)  # save_variables makes it
  try:
    checkpoints.save_variables(tmp, variables, metadata={
        'zoo_model': model.name, 'source': model.url or model.page, 'file': pth,
        'sha256': file_sha256(pth), 'layout': model.layout, 'model': config.model.to_dict()},
        config=config)
    try:
      os.rename(tmp, folder)
    except OSError:  # another process finished first
      if not _complete(folder):
        raise
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
  return folder


def fetch(spec: str, *, offline: bool | None = None) -> str:
  """The local file of ``spec`` with no conversion: a path (as is), a URL (downloaded; the
  hash from ``#sha256=HEX`` or the file name) or a zoo name (its downloaded .pth)."""
  if os.path.exists(spec):
    return spec
  if spec.startswith(('https://', 'http://')):
    url, _, fragment = spec.partition('#')
    sha256 = fragment[len('sha256='):] if fragment.startswith('sha256=') else None
    return download(url, sha256=sha256, offline=offline)
  model = get(spec)
  return download(model.url or '', sha256=model.sha256, file_name=model.file_name,
                  offline=offline, page=model.page, page_path=model.page_path)


def weights_path(spec: str, *, offline: bool | None = None) -> str:
  """A local checkpoint for ``spec``: as ``fetch``, but a zoo pose model is its orbax folder,
  converted on first use and read from the cache, with no network, from then on."""
  if not is_zoo_name(spec) or get(spec).kind == 'backbone':
    return fetch(spec, offline=offline)
  model = get(spec)
  if _complete(_converted_dir(model)):
    return _converted_dir(model)
  return convert(model, fetch(spec, offline=offline))


def is_zoo_name(spec: str) -> bool:
  """Whether ``spec`` names a zoo model (and is not an existing path)."""
  return spec in MODELS and not os.path.exists(spec)


def load_variables(spec: str, model_config: ml_collections.ConfigDict, *,
                   offline: bool | None = None) -> dict[str, Any]:
  """``{'params', 'batch_stats'}`` of a zoo name, URL, orbax folder or .pth, for the model of
  ``model_config`` (checked strictly)."""
  if is_zoo_name(spec) and get(spec).kind == 'backbone':
    raise errors.UserError(f'{spec} is an ImageNet backbone, not a pose model: start training '
                           f'from it (--config.init_from={spec})')
  path = weights_path(spec, offline=offline)
  if os.path.isdir(path):
    return checkpoints.restore_variables(path, model_config)
  layout = MODELS[spec].layout if is_zoo_name(spec) else None
  return weights.load_torch_checkpoint(path, model_config, layout=layout)


def config_for(spec: str, config: ml_collections.ConfigDict | None) -> ml_collections.ConfigDict:
  """``config`` if given, else the zoo model's recipe with its publisher's test settings."""
  if config is not None:
    return config
  if not is_zoo_name(spec):
    raise errors.ConfigError(f'{spec} is not a zoo name: pass the config of its model too '
                             f'(--config=configs/....py)')
  return get(spec).config()


# ----------------------------------------------------------------------------- the registry

def _topdown(width: int, image_size: tuple[int, int], sigma: int, batch_size: int):
  return lambda: config_lib.topdown_config(width=width, image_size=image_size, sigma=sigma,
                                           batch_size=batch_size, test_batch_size=batch_size)


def _bottomup(width: int, input_size: int, batch_size: int):
  return lambda: config_lib.bottomup_config(width=width, input_size=input_size,
                                            batch_size=batch_size)


def _mpii(width: int):
  return lambda: config_lib.mpii_config(width=width)


# Recipe file -> its config (the same builder call; tests/test_zoo.py checks they agree).
_RECIPES = {
    'configs/coco_w32.py': _topdown(32, (192, 256), 2, 128),
    'configs/coco_w32_384x288.py': _topdown(32, (288, 384), 3, 128),
    'configs/coco_w48.py': _topdown(48, (192, 256), 2, 128),
    'configs/coco_w48_384x288.py': _topdown(48, (288, 384), 3, 96),
    'configs/mpii_w32_256x256.py': _mpii(32),
    'configs/mpii_w48_256x256.py': _mpii(48),
    'configs/coco_higherhrnet_w32_512.py': _bottomup(32, 512, 96),
    'configs/coco_higherhrnet_w32_640.py': _bottomup(32, 640, 96),
    'configs/coco_higherhrnet_w48_640.py': _bottomup(48, 640, 40),
}
# Parameters of the publishers' architectures: the official code's manifests
# (tests/fixtures/official_*/manifest_*.json); MPII's 16 joints have one output channel less.
_PARAMS = {('topdown', 32, 17): 28_536_113, ('topdown', 48, 17): 63_595_745,
           ('topdown', 32, 16): 28_536_080, ('topdown', 48, 16): 63_595_696,
           ('bottomup', 32, 17): 28_645_331, ('bottomup', 48, 17): 63_827_139}
_COCO_METRICS = ('AP', 'AP50', 'AP75', 'AR', 'AR50')
_COCO_TEST = 'COCO val2017, person detector boxes (AP 56.4), flip test'
_MMPOSE = 'https://download.openmmlab.com/mmpose/'
_MMPOSE_0X = ('https://github.com/open-mmlab/mmpose/blob/0.x/configs/body/2d_kpt_sview_rgb_img/'
              'topdown_heatmap/')
_MMPOSE_1X = ('https://github.com/open-mmlab/mmpose/blob/main/configs/body_2d_keypoint/'
              'topdown_heatmap/')
_HRNET_DRIVE = 'https://drive.google.com/drive/folders/1hOTihvbyIxsm5ygDpbUuJ7O_tzv4oXjC'
_HIGHER_DRIVE = 'https://drive.google.com/open?id=1bdXVmYrSynPLSk5lptvgyQ8fhziobD50'


def _register(name: str, kind: str, recipe: str, layout: str, *, url: str = '',
              file_name: str = '', page: str = '', page_path: str = '', overrides=None,
              reported=None,
              reported_on: str = '', source: str = '') -> None:
  config = _RECIPES[recipe]()
  joints = config.model.num_joints
  register(ZooModel(
      name=name, kind=kind, recipe=recipe, build=_RECIPES[recipe], layout=layout,
      url=url or None, page=page or None, page_path=page_path,
      file_name=file_name or os.path.basename(url),
      sha256=hash_from_url(url) if url else None, overrides=dict(overrides or {}),
      reported=dict(reported or {}), reported_on=reported_on, source=source,
      num_params=_PARAMS.get((kind, config.model.width, joints), 0)))


# mmpose's HRNet top-down COCO models, direct downloads: plain (the official decoding), DARK
# and UDP; 0.x files and the _v1 ones retrained with mmpose 1.x. The test settings are those of
# their mmpose configs: 0.x blurs with kernel 17 at 384x288 (modulate_kernel), 1.x with 11.
# (name, file under download.openmmlab.com/mmpose/, (AP, AP50, AP75, AR, AR50) on COCO val2017)
_MMPOSE_COCO = (
    ('hrnet_w32_coco_256x192', 'top_down/hrnet/hrnet_w32_coco_256x192-c78dce93_20200708.pth',
     (0.746, 0.904, 0.819, 0.799, 0.942)),
    ('hrnet_w32_coco_256x192_dark',
     'top_down/hrnet/hrnet_w32_coco_256x192_dark-07f147eb_20200812.pth',
     (0.757, 0.907, 0.823, 0.808, 0.943)),
    ('hrnet_w32_coco_256x192_udp', 'top_down/udp/hrnet_w32_coco_256x192_udp-aba0be42_20210220.pth',
     (0.76, 0.907, 0.827, 0.811, 0.945)),
    ('hrnet_w32_coco_384x288', 'top_down/hrnet/hrnet_w32_coco_384x288-d9f0d786_20200708.pth',
     (0.76, 0.906, 0.829, 0.81, 0.943)),
    ('hrnet_w32_coco_384x288_dark',
     'top_down/hrnet/hrnet_w32_coco_384x288_dark-307dafc2_20210203.pth',
     (0.766, 0.907, 0.831, 0.815, 0.943)),
    ('hrnet_w32_coco_384x288_udp', 'top_down/udp/hrnet_w32_coco_384x288_udp-e97c1a0f_20210223.pth',
     (0.769, 0.908, 0.833, 0.817, 0.944)),
    ('hrnet_w48_coco_256x192', 'top_down/hrnet/hrnet_w48_coco_256x192-b9e0b3ab_20200708.pth',
     (0.756, 0.907, 0.825, 0.806, 0.942)),
    ('hrnet_w48_coco_256x192_dark',
     'top_down/hrnet/hrnet_w48_coco_256x192_dark-8cba3197_20200812.pth',
     (0.764, 0.907, 0.83, 0.814, 0.943)),
    ('hrnet_w48_coco_256x192_udp', 'top_down/udp/hrnet_w48_coco_256x192_udp-2554c524_20210223.pth',
     (0.767, 0.906, 0.834, 0.817, 0.945)),
    ('hrnet_w48_coco_384x288', 'top_down/hrnet/hrnet_w48_coco_384x288-314c8528_20200708.pth',
     (0.767, 0.91, 0.831, 0.816, 0.946)),
    ('hrnet_w48_coco_384x288_dark',
     'top_down/hrnet/hrnet_w48_coco_384x288_dark-e881a4b6_20210203.pth',
     (0.772, 0.91, 0.836, 0.82, 0.946)),
    ('hrnet_w48_coco_384x288_udp', 'top_down/udp/hrnet_w48_coco_384x288_udp-0f89c63e_20210223.pth',
     (0.772, 0.91, 0.835, 0.82, 0.945)),
    ('hrnet_w32_coco_256x192_v1', 'td-hm_hrnet-w32_8xb64-210e_coco-256x192-81c58e40_20220909.pth',
     (0.749, 0.906, 0.821, 0.804, 0.945)),
    ('hrnet_w32_coco_256x192_dark_v1',
     'td-hm_hrnet-w32_dark-8xb64-210e_coco-256x192-0e00bf12_20220914.pth',
     (0.757, 0.907, 0.825, 0.807, 0.943)),
    ('hrnet_w32_coco_256x192_udp_v1',
     'td-hm_hrnet-w32_udp-8xb64-210e_coco-256x192-73ede547_20220914.pth',
     (0.762, 0.907, 0.829, 0.81, 0.942)),
    ('hrnet_w32_coco_384x288_v1', 'td-hm_hrnet-w32_8xb64-210e_coco-384x288-ca5956af_20220909.pth',
     (0.761, 0.908, 0.826, 0.811, 0.944)),
    ('hrnet_w32_coco_384x288_dark_v1',
     'td-hm_hrnet-w32_dark-8xb64-210e_coco-384x288-9bab4c9b_20220917.pth',
     (0.766, 0.907, 0.829, 0.815, 0.943)),
    ('hrnet_w32_coco_384x288_udp_v1',
     'td-hm_hrnet-w32_udp-8xb64-210e_coco-384x288-9a3f7c85_20220914.pth',
     (0.768, 0.909, 0.832, 0.815, 0.945)),
    ('hrnet_w48_coco_256x192_v1', 'td-hm_hrnet-w48_8xb32-210e_coco-256x192-0e67c616_20220913.pth',
     (0.756, 0.908, 0.826, 0.809, 0.945)),
    ('hrnet_w48_coco_256x192_dark_v1',
     'td-hm_hrnet-w48_dark-8xb32-210e_coco-256x192-e1ebdd6f_20220913.pth',
     (0.764, 0.907, 0.831, 0.814, 0.942)),
    ('hrnet_w48_coco_256x192_udp_v1',
     'td-hm_hrnet-w48_udp-8xb32-210e_coco-256x192-3feaef8f_20220913.pth',
     (0.768, 0.908, 0.833, 0.817, 0.945)),
    ('hrnet_w48_coco_384x288_v1', 'td-hm_hrnet-w48_8xb32-210e_coco-384x288-c161b7de_20220915.pth',
     (0.767, 0.911, 0.832, 0.817, 0.947)),
    ('hrnet_w48_coco_384x288_dark_v1',
     'td-hm_hrnet-w48_dark-8xb32-210e_coco-384x288-39c3c381_20220916.pth',
     (0.772, 0.911, 0.833, 0.821, 0.948)),
    ('hrnet_w48_coco_384x288_udp_v1',
     'td-hm_hrnet-w48_udp-8xb32-210e_coco-384x288-70d7ab01_20220913.pth',
     (0.773, 0.911, 0.836, 0.821, 0.946)),
)
for _name, _path, _numbers in _MMPOSE_COCO:
  _v1 = _name.endswith('_v1')
  _codec = next((c for c in ('dark', 'udp') if f'_{c}' in _name), '')
  _width, _size = _name.split('_')[1], _name.split('_')[3]
  _overrides: dict[str, Any] = {'test.decoder': _codec} if _codec else {}
  if _codec == 'udp':
    _overrides['test.shift_heatmap'] = False
  if _codec and _size == '384x288' and not _v1:
    _overrides['test.blur_kernel'] = 17
  _register(
      _name, 'topdown',
      f'configs/coco_{_width}.py' if _size == '256x192' else f'configs/coco_{_width}_{_size}.py',
      'mmpose1' if _v1 else 'mmpose0',
      url=_MMPOSE + ('v1/body_2d_keypoint/topdown_heatmap/coco/' if _v1 else '') + _path,
      overrides=_overrides, reported=dict(zip(_COCO_METRICS, _numbers)), reported_on=_COCO_TEST,
      source=(_MMPOSE_1X if _v1 else _MMPOSE_0X) +
      f'coco/hrnet{"_" + _codec if _codec else ""}_coco.md')

for _width, _path, _pckh in ((32, 'hrnet_w32_mpii_256x256-6c4f923f_20200812.pth', (90.0, 33.4)),
                             (48, 'hrnet_w48_mpii_256x256-92cab7bd_20200812.pth', (90.1, 33.7))):
  _register(f'hrnet_w{_width}_mpii_256x256', 'topdown', f'configs/mpii_w{_width}_256x256.py',
            'mmpose0', url=f'{_MMPOSE}top_down/hrnet/{_path}',
            reported={'PCKh': _pckh[0], 'PCKh@0.1': _pckh[1]},
            reported_on='MPII val, ground-truth boxes, flip test',
            source=_MMPOSE_0X + 'mpii/hrnet_mpii.md')

# The authors' own files, only on Google Drive / OneDrive: downloaded by hand (no hash is
# published; the sha256 of a placed file is logged).
for _width, _size, _numbers in ((32, '256x192', (0.744, 0.905, 0.819, 0.798, 0.942)),
                                (32, '384x288', (0.758, 0.906, 0.825, 0.809, 0.943)),
                                (48, '256x192', (0.751, 0.906, 0.822, 0.804, 0.943)),
                                (48, '384x288', (0.763, 0.908, 0.829, 0.812, 0.942))):
  _register(f'official_hrnet_w{_width}_coco_{_size}', 'topdown',
            f'configs/coco_w{_width}.py' if _size == '256x192' else
            f'configs/coco_w{_width}_{_size}.py', 'official',
            file_name=f'pose_hrnet_w{_width}_{_size}.pth',
            page=_HRNET_DRIVE, page_path=f'pose_coco/pose_hrnet_w{_width}_{_size}.pth',
            reported=dict(zip(_COCO_METRICS, _numbers)), reported_on=_COCO_TEST,
            source='https://github.com/leoxiaobin/deep-high-resolution-net.pytorch#main-results')
for _width, _pckh in ((32, {'PCKh': 90.3, 'PCKh@0.1': 37.7}), (48, {})):
  _register(f'official_hrnet_w{_width}_mpii_256x256', 'topdown',
            f'configs/mpii_w{_width}_256x256.py', 'official',
            file_name=f'pose_hrnet_w{_width}_256x256.pth',
            page=_HRNET_DRIVE, page_path=f'pose_mpii/pose_hrnet_w{_width}_256x256.pth',
            reported=_pckh,
            reported_on='MPII val, ground-truth boxes, flip test' if _pckh else 'not published',
            source='https://github.com/leoxiaobin/deep-high-resolution-net.pytorch#main-results')
for _width, _size, _file, _numbers in (
    (32, 512, 'pose_higher_hrnet_w32_512.pth', (0.671, 0.862, 0.730)),
    (32, 640, 'pose_higher_hrnet_w32_640.pth.tar', (0.685, 0.871, 0.747)),
    (48, 640, 'pose_higher_hrnet_w48_640.pth.tar', (0.699, 0.872, 0.761))):
  _register(f'official_higherhrnet_w{_width}_coco_{_size}', 'bottomup',
            f'configs/coco_higherhrnet_w{_width}_{_size}.py', 'official', file_name=_file,
            page=_HIGHER_DRIVE, page_path=f'pose_coco/{_file}',
            reported=dict(zip(_COCO_METRICS, _numbers)),
            reported_on='COCO val2017, single scale, flip test',
            source='https://github.com/HRNet/HigherHRNet-Human-Pose-Estimation#main-results')

# ImageNet-pretrained backbones (the official HRNet-Image-Classification files, as mmpose hosts
# them): --config.init_from takes their backbone.
for _width, _file in ((32, 'hrnet_w32-36af842e.pth'), (48, 'hrnet_w48-8ef0771d.pth')):
  _register(f'hrnet_w{_width}_imagenet', 'backbone', f'configs/coco_w{_width}.py', 'imagenet',
            url=f'{_MMPOSE}pretrain_models/{_file}',
            reported_on='ImageNet classification backbone (for --config.init_from)',
            source='https://github.com/HRNet/HRNet-Image-Classification')


def markdown_table() -> str:
  """The zoo as the README's markdown table (``python -m hrnet_jax.zoo``)."""
  rows = ['| Name | Input | Decoding | Publisher reports | Weights | sha256 |',
          '| --- | --- | --- | --- | --- | --- |']
  for m in MODELS.values():
    config = m.config()
    dataset = config.dataset
    size = ('-' if m.kind == 'backbone' else
            'x'.join(str(s) for s in reversed(dataset.image_size)) if 'image_size' in dataset
            else f'{dataset.input_size}x{dataset.input_size}')  # h x w, as the papers
    decoding = ('-' if m.kind == 'backbone' else 'grouping' if m.kind == 'bottomup'
                else config.test.decoder)
    numbers = ', '.join(f'{k} {v}' for k, v in list(m.reported.items())[:2]) or '-'
    where = (f'[mmpose]({m.url})' if 'openmmlab' in (m.url or '') else
             f'[direct]({m.url})' if m.url else f'[by hand]({m.page}): `{m.page_path}`')
    rows.append(f'| `{m.name}` | {size} | {decoding} | {numbers} | {where} | '
                f'{m.sha256 or "-"} |')
  return '\n'.join(rows)


_VARIANTS = ('_dark_v1', '_udp_v1', '_v1', '_dark', '_udp')


def markdown_summary() -> str:
  """The zoo in the README: one row per pose model (all its variants, with their first
  reported number); the backbones are left out."""
  groups: dict[str, list[ZooModel]] = {}
  for m in MODELS.values():
    if m.kind != 'backbone':  # (named in the README's text)
      base = next((m.name[:-len(v)] for v in _VARIANTS if m.name.endswith(v)), m.name)
      groups.setdefault(base, []).append(m)
  rows = ['| name | variants: publisher reports | weights |', '| --- | --- | --- |']
  for base, members in groups.items():
    first = next(iter(members[0].reported), '')
    if len(members) == 1:
      numbers = f'{first} {members[0].reported[first]}' if first else 'not published'
    else:
      numbers = first + ': ' + ', '.join(
          f'{m.name[len(base):] or "plain"} {m.reported[first]}' for m in members)
    where = ('mmpose' if 'openmmlab' in (members[0].url or '') else
             'direct' if members[0].url else f'[by hand]({members[0].page})')
    rows.append(f'| `{base}` | {numbers} | {where} |')
  return '\n'.join(rows)

if __name__ == '__main__':
  print(markdown_table())  # docs/models.md; markdown_summary() is the README's
