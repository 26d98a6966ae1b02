"""The TFDS shards of a COCO-format folder and the streaming pipelines that read them."""

import collections
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from hrnet_jax import keypoints as kp
from input_pipeline import coco, pipeline, tfds_source

SPEC = pipeline.SampleSpec((96, 128), (24, 32), 2.0, kp.COCO_FLIP_PAIRS, kp.COCO_UPPER_BODY_IDS)
BATCH = 8


@pytest.fixture(scope='module')
def folder(synthetic_folder):
  return synthetic_folder


@pytest.fixture(scope='module')
def data_dir(folder, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('tfds'))
  tfds_source.prepare(folder, out)
  return out


def take(ds, n):
  it = ds.as_numpy_iterator()
  return [next(it) for _ in range(n)]


def test_shards_hold_the_folder_people_and_the_original_jpeg_bytes(folder, data_dir):
  builder = tfds_source.load_builder(data_dir)
  truth = coco.load_ground_truth(folder, 'train', aspect_ratio=SPEC.aspect_ratio)
  assert builder.info.splits['train'].num_examples == len(set(truth.image_ids))
  by_id = collections.defaultdict(list)
  for i, image_id in enumerate(truth.image_ids):
    by_id[int(image_id)].append(i)
  seen = 0
  for ex in tfds_source._examples(builder, 'train', cycle_length=1).as_numpy_iterator():
    rows = by_id[int(ex['image_id'])]
    with open(truth.image_paths[rows[0]], 'rb') as f:
      assert ex['image'] == f.read()  # not re-encoded
    center, scale = tfds_source.center_scale(ex['people']['box'], SPEC.aspect_ratio)
    np.testing.assert_array_equal(center.numpy(), truth.centers[rows])  # exact, float32
    np.testing.assert_array_equal(scale.numpy(), truth.scales[rows])
    np.testing.assert_array_equal(ex['people']['keypoints'], truth.keypoints[rows])
    seen += len(rows)
  assert seen == len(truth)
  counts = tfds_source.people_per_example(builder)
  assert counts['train'].sum() == len(truth)


def test_training_stream_is_a_pure_function_of_seed_and_step(data_dir):
  people = int(tfds_source.people_per_example(tfds_source.load_builder(data_dir))['train'].sum())
  steps = people // BATCH + 2  # crosses an epoch boundary
  run = take(tfds_source.train_dataset(data_dir, 'train', SPEC, BATCH, seed=3), steps)
  again = take(tfds_source.train_dataset(data_dir, 'train', SPEC, BATCH, seed=3), steps)
  for a, b in zip(run, again):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  start = steps - 3
  resumed = take(tfds_source.train_dataset(data_dir, 'train', SPEC, BATCH, seed=3,
                                           start_step=start), 3)
  for a, b in zip(run[start:], resumed):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  other = take(tfds_source.train_dataset(data_dir, 'train', SPEC, BATCH, seed=4), 1)[0]
  assert not np.array_equal(other['image'], run[0]['image'])
  assert run[0]['image'].shape == (BATCH, 128, 96, 3)
  assert run[0]['heatmaps'].shape == (BATCH, 32, 24, 17)
  assert run[0]['target_weight'].shape == (BATCH, 17, 1)
  # Each epoch is a permutation of the people: image ids come as often as they have people.
  ids = np.concatenate([b['image_id'] for b in run])
  epoch_ids = ids[:people - people % BATCH]
  counts = tfds_source.people_per_example(tfds_source.load_builder(data_dir))['train']
  assert len(np.unique(epoch_ids)) >= len(counts) - BATCH
  assert collections.Counter(epoch_ids.tolist()).most_common(1)[0][1] <= counts.max()


def test_processes_stream_disjoint_slices(data_dir):
  builder = tfds_source.load_builder(data_dir)
  people = tfds_source.people_per_example(builder)['train']
  shares = []
  for k in range(2):
    steps = tfds_source._process_slice(builder, 'train', k, 2)[1] // (BATCH // 2)
    batches = take(tfds_source.train_dataset(data_dir, 'train', SPEC, BATCH, seed=3,
                                             process_index=k, process_count=2), steps)
    assert all(b['image'].shape[0] == BATCH // 2 for b in batches)
    shares.append(set(np.concatenate([b['image_id'] for b in batches]).tolist()))
  assert not shares[0] & shares[1]
  assert len(shares[0] | shares[1]) >= len(people) - BATCH


def test_eval_stream_equals_the_folder_eval_pipeline(folder, data_dir):
  truth = coco.load_ground_truth(folder, 'val', aspect_ratio=SPEC.aspect_ratio)
  ours = list(tfds_source.eval_dataset(data_dir, 'val', SPEC, 6).as_numpy_iterator())
  ref = list(pipeline.eval_dataset(truth, SPEC, 6).as_numpy_iterator())
  def rows(batches):
    out = {}
    for b in batches:
      for i in np.flatnonzero(b['mask']):
        out[(int(b['image_id'][i]), *b['center'][i].tolist())] = b['image'][i]
    return out
  ours_rows, ref_rows = rows(ours), rows(ref)
  assert sum(int(b['mask'].sum()) for b in ours) == len(truth)  # each person once
  assert ours_rows.keys() == ref_rows.keys()
  for key in ref_rows:
    np.testing.assert_array_equal(ours_rows[key], ref_rows[key])
  # Two processes: the same global batches, split by rows.
  halves = [list(tfds_source.eval_dataset(data_dir, 'val', SPEC, 6, process_index=k,
                                          process_count=2).as_numpy_iterator()) for k in (0, 1)]
  for whole, a, b in zip(ours, *halves):
    np.testing.assert_array_equal(np.concatenate([a['image_id'], b['image_id']]),
                                  whole['image_id'])


def test_clear_errors_for_unprepared_dirs_and_unknown_splits(data_dir, tmp_path):
  with pytest.raises(coco.DatasetError, match='prepare_tfds.py'):
    tfds_source.train_dataset(str(tmp_path), 'train', SPEC, BATCH, seed=0)
  with pytest.raises(coco.DatasetError, match="no split 'train2017'.*'train', 'val'"):
    tfds_source.eval_dataset(data_dir, 'train2017', SPEC, BATCH)
  with pytest.raises(coco.DatasetError, match='no annotation files'):
    tfds_source.prepare(str(tmp_path), str(tmp_path / 'out'))


def test_prepare_cli(folder, tmp_path):
  cmd = [sys.executable, os.path.join(REPO, 'launch', 'prepare_tfds.py'),
         f'--manual_dir={folder}', f'--data_dir={tmp_path}']
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert 'train: 24 images' in result.stdout and 'val: 6 images' in result.stdout
