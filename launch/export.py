r"""Exports a model's network for deployment: ONNX, TF SavedModel, TFLite, StableHLO.

python launch/export.py --model=ZOO_NAME|CONVERTED_DIR --output=DIR \
    [--formats=onnx,savedmodel,tflite,tflite_fp16,stablehlo] [--layout=nhwc|nchw] \
    [--head=network|decoded]
python launch/export.py --model=X.pth --config=configs/coco_w32.py --output=DIR
python launch/export.py --workdir=RUN [--checkpoint=latest|best|STEP] --output=DIR

The input is a batch of network inputs (N, H, W, 3) float32 (NCHW with --layout=nchw, ONNX
only): RGB scaled to 0..1, minus the ImageNet mean, over its std, as DIR/export.json says.
--head=network ends at the heatmaps (HigherHRNet: its two outputs, the tags in the first);
--head=decoded (top-down) adds the config's flip test and argmax decoding (coords in heatmap
pixels, maxvals). Inference-mode BatchNorm is folded into the convolutions. Each file is
written under a temporary name and renamed when complete; existing files are never
overwritten. DIR/export.json describes the inputs, outputs and keypoints. Details:
docs/export.md.
"""

from __future__ import annotations

import json
import os

from absl import flags
from ml_collections import config_flags

from hrnet_jax import cli, errors, estimator, export, keypoints, tasks, train_lib
from input_pipeline import transforms

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run folder (config and checkpoints).')
_MODEL = flags.DEFINE_string('model', None, 'Instead of --workdir: a zoo name, a URL, converted '
                             'weights (folder) or a .pth.')
_CONFIG = config_flags.DEFINE_config_file('config', None, "The recipe of --model (default: "
                                          "the zoo model's or the folder's).", lock_config=True)
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best' or a step number.")
_OUTPUT = flags.DEFINE_string('output', None, 'Folder to write the artifacts into.')
_FORMATS = flags.DEFINE_list('formats', ['onnx'], f'Some of {", ".join(export.FORMATS)}.')
_LAYOUT = flags.DEFINE_enum('layout', 'nhwc', export.LAYOUTS, 'Input and 4-d output layout of '
                            'the ONNX model.')
_HEAD = flags.DEFINE_enum('head', 'network', export.HEADS, 'Where the graph ends (decoded: '
                          'top-down models).')

SPEC_FILE = 'export.json'


def main(argv: list[str]) -> int:
  """Loads the model and writes each format, then export.json."""
  del argv
  if bool(_WORKDIR.value) == bool(_MODEL.value):
    raise errors.UserError('pass either --workdir (a training run) or --model (a zoo name, URL, '
                           'converted folder or .pth)')
  if not _OUTPUT.value:
    raise errors.UserError('--output (a folder) is required')
  spec_path = os.path.join(_OUTPUT.value, SPEC_FILE)
  if os.path.exists(spec_path):
    raise errors.ExistingFileError(f'{spec_path} already exists; refusing to overwrite it')
  config, variables, what = estimator.load_model(_MODEL.value or _WORKDIR.value, _CONFIG.value,
                                                 _CHECKPOINT.value)
  train_lib.use_compilation_cache(config)
  exported = tasks.get_task(config).exportable(variables, _HEAD.value)
  paths = export.export(exported, _OUTPUT.value, _FORMATS.value, layout=_LAYOUT.value)
  height, width = exported.image_shape
  shape = ([export.BATCH, 3, height, width] if _LAYOUT.value == 'nchw'
           else [export.BATCH, height, width, 3])
  spec = {
      'model': what, 'model_config': config.model.to_dict(), 'head': _HEAD.value,
      'input': {'name': 'image', 'shape': shape, 'dtype': 'float32', 'channels': 'RGB',
                'normalisation': '(pixel / 255 - mean) / std',
                'mean': list(transforms.IMAGENET_MEAN), 'std': list(transforms.IMAGENET_STD)},
      'outputs': list(exported.output_names),
      'layout': {'onnx': _LAYOUT.value, 'others': 'nhwc'},
      'keypoints': list(keypoints.from_config(config).names),
      'files': {f: os.path.basename(p) for f, p in paths.items()},
  }
  export.write_file(spec_path, json.dumps(spec, indent=2).encode())
  for fmt, path in paths.items():
    print(f'{fmt}: {path}')
  print(f'{spec_path}: input {shape} float32, outputs {", ".join(exported.output_names)}.')
  return 0


if __name__ == '__main__':
  cli.run(main)
