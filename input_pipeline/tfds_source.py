"""COCO-format keypoint data as TFDS shards, and the top-down pipelines that stream them.

``prepare(manual_dir, data_dir)`` turns a COCO-format folder (COCO itself, a converted
dataset or the synthetic set) into TFDS shards: one example per image with people, holding
the original image bytes (JPEG, PNG, ...: not re-encoded; decoded as the folder pipeline does)
and the people that ``coco.labelled_people`` keeps.
``data_dir`` may be a gs:// path, so a pod reads few large files instead of many JPEGs.

Shards are read as a stream, so sampling differs from the folder pipeline (which draws any
instance at any step): process k of P streams its own contiguous slice of the split. Each
epoch reads the files in an order seeded by (seed, epoch), interleaved, and permutes each
run of ``shuffle_block`` people with the same seed; augmentation draws come from (seed,
process, local position). The stream is a pure function of (seed, step): a pipeline started
at step s skips the people of its epoch before that step without decoding them (they are
read, as a stream must be). People counts per example are stored beside the shards.
"""

from __future__ import annotations

import json
import os

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from hrnet_jax import keypoints as kp
from input_pipeline import coco, pipeline

AUTOTUNE = tf.data.AUTOTUNE
NAME = 'person_keypoints'


class PersonKeypoints(tfds.core.GeneratorBasedBuilder):
  """COCO-format person keypoints from a folder given as ``manual_dir``."""

  VERSION = tfds.core.Version('1.0.0')
  NUM_JOINTS = len(kp.COCO_KEYPOINT_NAMES)
  RELEASE_NOTES = {'1.0.0': 'One example per image: JPEG bytes as stored, cleaned people.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'manual_dir is a COCO-format folder: annotations/person_keypoints_{split}.json and the '
      'images in {split}/ or images/{split}/ (COCO 2017, or launch/make_synthetic.py output).')

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
            'image_id': tfds.features.Scalar(np.int64),
            'file_name': tfds.features.Text(),
            # float64 as raw bytes: tf.train.Example floats are float32 and would round
            # COCO's 2-decimal coordinates.
            'people': tfds.features.Sequence({
                'id': tfds.features.Scalar(np.int64),
                'box': tfds.features.Tensor(shape=(4,), dtype=np.float64,
                                            encoding=tfds.features.Encoding.BYTES),
                'keypoints': tfds.features.Tensor(shape=(self.NUM_JOINTS, 3), dtype=np.float64,
                                                  encoding=tfds.features.Encoding.BYTES),
                'area': tfds.features.Scalar(np.float64),
            }),
        }),
        metadata=tfds.core.MetadataDict(),
        homepage='https://cocodataset.org/#keypoints-2017')

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    pattern = coco.annotation_path(root, '*')
    prefix, suffix = pattern.split('*')
    splits = sorted(p[len(prefix):-len(suffix)] for p in tf.io.gfile.glob(pattern))
    if not splits:
      raise coco.DatasetError(f'no annotation files {pattern} in manual_dir {root}')
    return {split: self._generate_examples(root, split) for split in splits}

  def _generate_examples(self, root: str, split: str):
    by_image: dict[int, list] = {}
    for person in coco.labelled_people(root, split, num_joints=self.NUM_JOINTS):
      by_image.setdefault(person.image['id'], []).append(person)
    for image_id, people in by_image.items():
      image = people[0].image
      yield image_id, {
          'image': image['path'],
          'image_id': image_id,
          'file_name': image['file_name'],
          'people': [{'id': p.id, 'box': np.asarray(p.box, np.float64),
                      'keypoints': p.keypoints, 'area': p.area} for p in people],
      }


def prepare(manual_dir: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Builds the shards of every split found in ``manual_dir`` under ``data_dir``."""
  builder = PersonKeypoints(data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  people_per_example(builder)  # counted once, stored beside the shards
  return builder


def load_builder(data_dir: str) -> tfds.core.DatasetBuilder:
  """The prepared builder in ``data_dir``, or a DatasetError saying how to prepare it."""
  builder = PersonKeypoints(data_dir=data_dir)
  if not builder.is_prepared():
    raise coco.DatasetError(
        f'no prepared {NAME} dataset in {data_dir}: run python launch/prepare_tfds.py '
        f'--manual_dir=COCO_FOLDER --data_dir={data_dir}')
  return builder


def check_split(builder: tfds.core.DatasetBuilder, split: str) -> None:
  """Raises a DatasetError naming the prepared splits unless ``split`` is one of them."""
  if split not in builder.info.splits:
    raise coco.DatasetError(f'{builder.data_dir}: no split {split!r}; it has '
                            f'{sorted(builder.info.splits.keys())}')


def people_per_example(builder: tfds.core.DatasetBuilder) -> dict[str, np.ndarray]:
  """Per split, the number of people of each example in read order (cached as JSON)."""
  path = os.path.join(builder.data_dir, 'people_per_example.json')
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      return {k: np.asarray(v, np.int64) for k, v in json.load(f).items()}
  counts = {}
  for split in builder.info.splits:  # in the canonical order that split slices index
    ds = _examples(builder, split, cycle_length=1)
    ds = ds.map(lambda ex: tf.shape(ex['people']['id'], tf.int64)[0])
    counts[split] = np.fromiter(ds.as_numpy_iterator(), np.int64)
  try:
    coco.write_json(path, {k: v.tolist() for k, v in counts.items()})
  except (OSError, tf.errors.OpError) as e:  # a read-only data_dir: count again next time
    logging.warning('could not cache people counts in %s: %s', path, e)
  return counts


def _process_slice(builder, split: str, process_index: int, process_count: int):
  """This process's contiguous slice of the split's examples, and its number of people."""
  n = builder.info.splits[split].num_examples
  lo, hi = process_index * n // process_count, (process_index + 1) * n // process_count
  people = int(people_per_example(builder)[split][lo:hi].sum())
  return f'{split}[{lo}:{hi}]', people


def center_scale(box, aspect_ratio: float, padding: float = coco.BOX_PADDING,
                 pixel_std: float = kp.PIXEL_STD):
  """``coco.box_to_center_scale`` as TF ops on (..., 4) float64 boxes (float32 out)."""
  x, y, w, h = tf.unstack(tf.cast(box, tf.float64), axis=-1)
  center = tf.stack([x + w * 0.5, y + h * 0.5], -1)
  h2 = tf.where(w > aspect_ratio * h, w / aspect_ratio, h)
  w2 = tf.where(w < aspect_ratio * h, h * aspect_ratio, w)
  scale = tf.cast(tf.stack([w2 / pixel_std, h2 / pixel_std], -1), tf.float32) * padding
  return tf.cast(center, tf.float32), scale


def _people(example, aspect_ratio: float) -> tf.data.Dataset:
  """One row per person of an image example: contents, center, scale, keypoints, ..."""
  people = example['people']
  n = tf.shape(people['id'])[0]
  center, scale = center_scale(people['box'], aspect_ratio)
  return tf.data.Dataset.from_tensor_slices({
      'contents': tf.fill([n], example['image']),
      'image_id': tf.fill([n], example['image_id']),
      'center': center, 'scale': scale, 'keypoints': people['keypoints'],
      'area': tf.cast(people['area'], tf.float32)})


def _examples(builder, subsplit: str, file_order_seed=None,
              cycle_length: int = 4) -> tf.data.Dataset:
  """The serialized-and-parsed examples of ``subsplit``, files in a seeded order if asked.

  Images stay encoded (SkipDecoding): the warp decodes a JPEG's window only (other formats whole).
  """
  instructions = builder.info.splits[subsplit].file_instructions
  files = {'filename': tf.constant([os.fspath(i.filename) for i in instructions]),
           'skip': tf.constant([i.skip for i in instructions], tf.int64),
           'take': tf.constant([i.take for i in instructions], tf.int64)}
  ds = tf.data.Dataset.from_tensor_slices(files)
  if file_order_seed is not None:
    order = tf.argsort(tf.random.stateless_uniform([len(instructions)], seed=file_order_seed))
    ds = tf.data.Dataset.from_tensor_slices({k: tf.gather(v, order) for k, v in files.items()})
  ds = ds.interleave(
      lambda f: tf.data.TFRecordDataset(f['filename']).skip(f['skip']).take(f['take']),
      cycle_length=cycle_length, block_length=1, num_parallel_calls=AUTOTUNE,
      deterministic=True)
  features = builder.info.features
  return ds.map(lambda x: features.deserialize_example(
      x, decoders={'image': tfds.decode.SkipDecoding()}), num_parallel_calls=AUTOTUNE,
      deterministic=True)


def _block_shuffle(ds: tf.data.Dataset, block: int, seed) -> tf.data.Dataset:
  """Shuffles each run of ``block`` rows with a stateless permutation keyed by (seed, run)."""
  def permute(run, rows):
    n = tf.shape(rows['image_id'])[0]
    keys = tf.random.stateless_uniform([n], seed=seed + tf.stack([0, run + 1]))
    order = tf.argsort(keys)
    return tf.data.Dataset.from_tensor_slices({k: tf.gather(v, order) for k, v in rows.items()})
  return ds.batch(block).enumerate().flat_map(permute)


def train_dataset(data_dir: str, split: str, spec: pipeline.SampleSpec, global_batch: int, *,
                  seed: int, start_step: int = 0, process_index: int = 0,
                  process_count: int = 1, shuffle_block: int = 4096) -> tf.data.Dataset:
  """Training batches from prepared shards, with the keys of ``pipeline.train_dataset``.

  ``position`` is this process's running sample count; ``index`` is -1 (no instance table).
  """
  builder = load_builder(data_dir)
  check_split(builder, split)
  local, _ = pipeline.share(global_batch, process_index, process_count)
  subsplit, people = _process_slice(builder, split, process_index, process_count)
  if people < local:
    raise coco.DatasetError(f'{data_dir} {subsplit}: {people} people, fewer than the '
                            f'{local} of one batch of process {process_index}')
  first = start_step * local
  start_epoch, skip = divmod(first, people)

  def epoch_stream(e):
    epoch_seed = tf.stack([tf.constant(seed, tf.int64), e])
    ds = _examples(builder, subsplit, file_order_seed=epoch_seed)
    ds = ds.flat_map(lambda ex: _people(ex, spec.aspect_ratio))
    ds = _block_shuffle(ds, shuffle_block, epoch_seed)
    return ds.skip(tf.where(e == start_epoch, tf.constant(skip, tf.int64), 0))

  def make_sample(position, row):
    seed_pair = tf.stack([tf.constant(seed, tf.int64),
                          position + tf.constant(process_index << 40, tf.int64)])
    image, keypoints = pipeline.training_sample(row['contents'], row['keypoints'],
                                                row['center'], row['scale'], seed_pair, spec)
    return {'image': image, 'keypoints': keypoints, 'position': position,
            'index': tf.constant(-1, tf.int64), 'image_id': row['image_id']}

  ds = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch_stream)
  ds = tf.data.Dataset.zip(tf.data.Dataset.range(first, np.iinfo(np.int64).max), ds)
  ds = ds.map(make_sample, num_parallel_calls=AUTOTUNE, deterministic=True)
  ds = ds.batch(local, drop_remainder=True)
  return ds.map(pipeline.finish_training_batch(spec), num_parallel_calls=AUTOTUNE,
                deterministic=True).prefetch(AUTOTUNE)


def eval_dataset(data_dir: str, split: str, spec: pipeline.SampleSpec, global_batch: int, *,
                 process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Every person once with its ground-truth box, as ``pipeline.eval_dataset`` batches.

  Every process streams the whole split and keeps its rows of each global batch; the last
  batch is padded (mask 0). ``index`` is the person's row in the split's read order.
  """
  builder = load_builder(data_dir)
  check_split(builder, split)
  local, offset = pipeline.share(global_batch, process_index, process_count)
  n = int(people_per_example(builder)[split].sum())
  padded = -(-n // global_batch) * global_batch
  rows = _examples(builder, split).flat_map(lambda ex: _people(ex, spec.aspect_ratio))
  rows = rows.repeat().take(padded).enumerate()
  rows = rows.filter(lambda i, _: (i % global_batch >= offset) &
                     (i % global_batch < offset + local))

  def make_sample(index, row):
    image = pipeline.eval_sample(row['contents'], row['center'], row['scale'], spec)
    return {'image': image, 'center': row['center'], 'scale': row['scale'], 'index': index,
            'mask': tf.cast(index < n, tf.float32), 'score': tf.constant(1.0),
            'image_id': row['image_id'], 'area': row['area']}

  ds = rows.map(make_sample, num_parallel_calls=AUTOTUNE, deterministic=True)
  return pipeline.batch_and_normalize(ds, local)
