r"""Writes the synthetic COCO-format keypoint dataset.

python launch/make_synthetic.py --output=DIR --num_train=2000 --num_val=200

DIR/{train,val}/*.jpg and DIR/annotations/person_keypoints_{train,val}.json; pycocotools
loads them and COCOeval scores them. The same seed writes the same files.
"""

from __future__ import annotations

import os
import time

from absl import flags

from hrnet_jax import cli, errors
from input_pipeline import synthetic

_OUTPUT = flags.DEFINE_string('output', None, 'New dataset folder.')
_NUM_TRAIN = flags.DEFINE_integer('num_train', 1000, 'Training images.')
_NUM_VAL = flags.DEFINE_integer('num_val', 100, 'Validation images.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')


def main(argv: list[str]) -> int:
  """Writes the dataset and prints what it wrote."""
  del argv
  if os.path.exists(os.path.join(_OUTPUT.value, 'annotations')):
    raise errors.ExistingFileError(f'{_OUTPUT.value} already holds a dataset; refusing to '
                                   'overwrite it')
  start = time.time()
  synthetic.write_dataset(_OUTPUT.value, _NUM_TRAIN.value, _NUM_VAL.value, seed=_SEED.value)
  print(f'Wrote {_NUM_TRAIN.value} train and {_NUM_VAL.value} val images to {_OUTPUT.value} '
        f'in {time.time() - start:.1f} s.')
  return 0


if __name__ == '__main__':
  flags.mark_flags_as_required(['output'])
  cli.run(main)
