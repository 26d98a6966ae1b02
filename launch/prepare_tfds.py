r"""Turns a COCO-format keypoint folder into TFDS shards for the streaming input pipeline.

python launch/prepare_tfds.py --manual_dir=data/coco --data_dir=gs://BUCKET/tfds/coco

Every split with an ``annotations/person_keypoints_{split}.json`` becomes a TFDS split of
one example per image with people (JPEG bytes as stored). A prepared data_dir is left as
it is. Train with ``--config.dataset.source=tfds --config.dataset.tfds_data_dir=DIR``.
"""

from __future__ import annotations

import time

from absl import flags

from hrnet_jax import cli
from input_pipeline import tfds_source

_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'COCO-format dataset folder.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Where the shards go (local or gs://).')


def main(argv: list[str]) -> int:
  """Prepares the shards and prints their splits."""
  del argv
  start = time.time()
  builder = tfds_source.prepare(_MANUAL_DIR.value, _DATA_DIR.value)
  people = tfds_source.people_per_example(builder)
  for name, split in sorted(builder.info.splits.items()):
    print(f'{name}: {split.num_examples} images, {int(people[name].sum())} people, '
          f'{split.num_shards} shard(s)')
  print(f'{builder.data_dir} ready in {time.time() - start:.1f} s.')
  return 0


if __name__ == '__main__':
  flags.mark_flags_as_required(['manual_dir', 'data_dir'])
  cli.run(main)
