"""COCO reading, the tf.data pipelines, determinism, process shares, bad input, synthetic data."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import REPO
from hrnet_jax import keypoints as kp, tasks
from input_pipeline import coco, pipeline

SPEC = pipeline.SampleSpec((96, 128), (24, 32), 2.0, kp.COCO_FLIP_PAIRS, kp.COCO_UPPER_BODY_IDS)
BATCH = 8


@pytest.fixture(scope='module')
def dataset(synthetic_folder):
  return synthetic_folder


@pytest.fixture(scope='module')
def train_instances(dataset):
  return coco.load_ground_truth(dataset, 'train', aspect_ratio=SPEC.aspect_ratio)


def batches(instances, n, **kwargs):
  it = pipeline.TrainIterator(instances, SPEC, BATCH, seed=kwargs.pop('seed', 7), **kwargs)
  return [next(it) for _ in range(n)]


def assert_same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_synthetic_dataset_is_coco_format_with_varied_people(dataset):
  gt = COCO(os.path.join(dataset, 'annotations', 'person_keypoints_val.json'))
  anns = gt.loadAnns(gt.getAnnIds())
  per_image = np.bincount([a['image_id'] for a in anns])
  assert per_image.max() >= 2  # several people per image
  vis = np.array([a['keypoints'][2::3] for a in anns])
  assert {0, 1, 2} <= set(vis.ravel().tolist())  # unlabelled, occluded, visible
  assert gt.loadCats(1)[0]['keypoints'] == list(kp.COCO_KEYPOINT_NAMES)
  for image in gt.loadImgs(gt.getImgIds()):
    assert os.path.getsize(os.path.join(dataset, 'val', image['file_name'])) > 1000
  results = [{'image_id': a['image_id'], 'category_id': 1, 'keypoints': a['keypoints'],
              'score': 1.0} for a in anns]
  evaluator = COCOeval(gt, gt.loadRes(results), 'keypoints')
  evaluator.evaluate()
  evaluator.accumulate()
  evaluator.summarize()
  assert evaluator.stats[0] == pytest.approx(1.0)


def test_ground_truth_instances_follow_the_official_rules(dataset, train_instances):
  with open(os.path.join(dataset, 'annotations', 'person_keypoints_train.json')) as f:
    data = json.load(f)
  labelled = [a for a in data['annotations'] if max(a['keypoints']) > 0]
  assert len(train_instances) == len(labelled)
  first = sorted(labelled, key=lambda a: (a['image_id'], a['id']))[0]
  image = next(i for i in data['images'] if i['id'] == first['image_id'])
  x, y, w, h = first['bbox']
  x2 = min(image['width'] - 1, x + max(0, w - 1))
  y2 = min(image['height'] - 1, y + max(0, h - 1))
  center, scale = coco.box_to_center_scale([x, y, x2 - x, y2 - y], SPEC.aspect_ratio)
  np.testing.assert_array_equal(train_instances.centers[0], center)
  np.testing.assert_array_equal(train_instances.scales[0], scale)
  assert train_instances.image_paths[0].endswith(image['file_name'])


def test_batches_are_a_pure_function_of_seed_and_step(train_instances):
  run = batches(train_instances, 4)
  assert run[0]['image'].shape == (BATCH, 128, 96, 3) and run[0]['image'].dtype == np.float32
  assert run[0]['heatmaps'].shape == (BATCH, 32, 24, 17)
  assert run[0]['target_weight'].shape == (BATCH, 17, 1)
  for a, b in zip(run, batches(train_instances, 4)):
    assert_same(a, b)
  other = batches(train_instances, 1, seed=8)[0]
  assert not np.array_equal(other['image'], run[0]['image'])
  # Started at step 2 (past an epoch boundary: 24 images hold < 48 people), it continues exactly.
  for a, b in zip(run[2:], batches(train_instances, 2, start_step=2)):
    assert_same(a, b)
  assert run[3]['position'][0] == 3 * BATCH


def test_two_process_shares_make_the_global_batch(train_instances):
  whole = batches(train_instances, 3)
  shares = [batches(train_instances, 3, process_index=p, process_count=2) for p in range(2)]
  for step in range(3):
    joined = {k: np.concatenate([shares[0][step][k], shares[1][step][k]]) for k in whole[step]}
    assert_same(joined, whole[step])
  with pytest.raises(ValueError, match='does not split'):
    pipeline.train_dataset(train_instances, SPEC, 9, seed=0, process_count=2)


def test_every_epoch_is_a_permutation(train_instances):
  n = len(train_instances)
  ds = pipeline.sample_positions(n, BATCH, seed=3, start_step=0)
  pairs = list(ds.take(2 * n).as_numpy_iterator())
  first, second = [i for _, i in pairs[:n]], [i for _, i in pairs[n:]]
  assert sorted(first) == sorted(second) == list(range(n))
  assert first != second


def test_eval_pipeline_pads_and_masks_the_last_batch(dataset):
  instances = coco.load_ground_truth(dataset, 'val', aspect_ratio=SPEC.aspect_ratio)
  n = len(instances)
  rows = []
  for process in range(2):
    ds = pipeline.eval_dataset(instances, SPEC, 4, process_index=process, process_count=2)
    rows.append(list(ds.as_numpy_iterator()))
  masks = np.concatenate([np.concatenate([a['mask'], b['mask']]) for a, b in zip(*rows)])
  index = np.concatenate([np.concatenate([a['index'], b['index']]) for a, b in zip(*rows)])
  assert len(masks) == -(-n // 4) * 4 and masks.sum() == n
  assert sorted(index[masks > 0].tolist()) == list(range(n))  # each instance exactly once
  batch = rows[0][0]
  np.testing.assert_array_equal(batch['center'], instances.centers[batch['index']])
  assert batch['image'].shape == (2, 128, 96, 3)


def test_detections_are_read_and_checked(dataset, tmp_path):
  gt = coco.load_ground_truth(dataset, 'val', aspect_ratio=SPEC.aspect_ratio)
  dets = [{'image_id': int(i), 'category_id': 1, 'bbox': [10, 10, 50, 80], 'score': s}
          for i, s in zip(gt.image_ids, np.linspace(0.1, 0.9, len(gt)))]
  path = tmp_path / 'dets.json'
  path.write_text(json.dumps(dets))
  loaded = coco.load_detections(str(path), dataset, 'val', aspect_ratio=SPEC.aspect_ratio,
                                score_threshold=0.5)
  assert len(loaded) == sum(d['score'] >= 0.5 for d in dets)
  np.testing.assert_allclose(loaded.centers[0], [35, 50])
  path.write_text('[]')
  with pytest.raises(coco.DatasetError, match='dets.json.*empty'):
    coco.load_detections(str(path), dataset, 'val', aspect_ratio=0.75)
  path.write_text(json.dumps([dict(dets[0], image_id=424242)]))
  with pytest.raises(coco.DatasetError, match='424242'):
    coco.load_detections(str(path), dataset, 'val', aspect_ratio=0.75)


def test_missing_and_malformed_files_name_the_file(dataset, tmp_path):
  with pytest.raises(coco.DatasetError, match='dataset folder not found: .*nowhere'):
    coco.load_ground_truth(str(tmp_path / 'nowhere'), 'train', aspect_ratio=0.75)
  broken = tmp_path / 'broken'
  shutil.copytree(dataset, broken)
  ann = broken / 'annotations' / 'person_keypoints_train.json'
  ann.write_text('{"images": [')
  with pytest.raises(coco.DatasetError, match='person_keypoints_train.json: not valid JSON'):
    coco.load_ground_truth(str(broken), 'train', aspect_ratio=0.75)
  ann.write_text(json.dumps({'images': [{'id': 1}], 'annotations': []}))
  with pytest.raises(coco.DatasetError, match=r"an image is missing key\(s\) \['file_name'\]"):
    coco.load_ground_truth(str(broken), 'train', aspect_ratio=0.75)
  shutil.rmtree(broken / 'val')
  with pytest.raises(coco.DatasetError, match=r"image file\(s\) not found, e.g. '\d+.jpg' "
                     r"\(looked in .*broken/val, "):
    coco.load_ground_truth(str(broken), 'val', aspect_ratio=0.75)


def test_corrupt_or_missing_jpeg_is_named_or_skipped_and_counted(dataset, tmp_path):
  root = tmp_path / 'corrupt'
  shutil.copytree(dataset, root)
  instances = coco.load_ground_truth(str(root), 'train', aspect_ratio=SPEC.aspect_ratio)
  bad = instances.image_paths[int(pipeline.TrainIterator(
      instances, SPEC, BATCH, seed=7).step_indices(1)[3])]
  with open(bad, 'r+b') as f:  # keep the header, destroy the rest
    f.seek(200)
    f.write(b'\x00' * 4000)
    f.truncate(1200)
  it = pipeline.TrainIterator(instances, SPEC, BATCH, seed=7)
  next(it)
  with pytest.raises(pipeline.DataError, match=os.path.basename(bad)):
    next(it)
  skipping = pipeline.TrainIterator(instances, SPEC, BATCH, seed=7, skip_bad_images=True)
  for _ in range(3):
    batch = next(skipping)
    assert len(batch['image']) == BATCH
  # Exactly the samples of the bad image among the positions read so far were skipped.
  read = list(pipeline.sample_positions(len(instances), BATCH, seed=7, start_step=0)
              .take(int(batch['position'][-1]) + 1).as_numpy_iterator())
  expected = sum(instances.image_paths[i] == bad for _, i in read)
  assert expected >= 1 and skipping.skipped == expected
  os.remove(bad)
  with pytest.raises(pipeline.DataError, match=os.path.basename(bad)):
    it = pipeline.TrainIterator(instances, SPEC, BATCH, seed=7, start_step=1)
    next(it)


def test_make_synthetic_cli(tmp_path):
  out = tmp_path / 'syn'
  cmd = [sys.executable, os.path.join(REPO, 'launch', 'make_synthetic.py'), f'--output={out}',
         '--num_train=3', '--num_val=2']
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert len(os.listdir(out / 'train')) == 3 and len(os.listdir(out / 'val')) == 2
  again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
  assert again.returncode == 1 and 'refusing to overwrite' in again.stderr


def test_sample_spec_reads_the_recipe():
  from hrnet_jax import config_lib
  config = config_lib.topdown_config(width=32, image_size=(192, 256), sigma=2, batch_size=128,
                                     test_batch_size=128)
  spec = tasks.sample_spec(config)
  assert spec.image_size == (192, 256) and spec.heatmap_size == (48, 64) and spec.sigma == 2
  assert (spec.scale_factor, spec.rotation_factor, spec.rotation_prob) == (0.35, 45.0, 0.6)
  assert (spec.half_body_prob, spec.num_joints_half_body) == (0.3, 8)
  assert spec.aspect_ratio == 0.75 and spec.flip_pairs == kp.COCO_FLIP_PAIRS
