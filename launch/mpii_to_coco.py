r"""Converts MPII annotations in the official json layout to a COCO-format keypoint file.

python launch/mpii_to_coco.py --input=mpii/annot/valid.json --images=mpii/images \
    --output=mpii/annotations/person_keypoints_valid.json

Training and evaluation read the official json directly (configs/mpii_w32_256x256.py); this
file is for other tools. Each annotation keeps the official crop as center and scale.
"""

from __future__ import annotations

import os

from absl import flags

from hrnet_jax import cli, errors
from input_pipeline import coco, mpii_convert

_INPUT = flags.DEFINE_string('input', None, 'Official MPII json (annot/train.json, valid.json).')
_IMAGES = flags.DEFINE_string('images', None, 'MPII images folder, for the image sizes.')
_OUTPUT = flags.DEFINE_string('output', None, 'COCO-format json to write (must not exist).')


def main(argv: list[str]) -> int:
  """Reads, converts and writes; never overwrites an existing file."""
  del argv
  if os.path.exists(_OUTPUT.value):
    raise errors.ExistingFileError(f'{_OUTPUT.value} already exists; refusing to overwrite it')
  records = coco.read_json(_INPUT.value)
  if not isinstance(records, list):
    raise errors.UserError(f'{_INPUT.value}: expected a list of person records (official '
                           f'layout), got a {type(records).__name__}')
  dataset = mpii_convert.to_coco(records, _IMAGES.value, source=_INPUT.value)
  coco.write_json(_OUTPUT.value, dataset)
  print(f'Wrote {_OUTPUT.value}: {len(dataset["images"])} images, '
        f'{len(dataset["annotations"])} people.')
  return 0


if __name__ == '__main__':
  flags.mark_flags_as_required(['input', 'output'])
  cli.run(main)
