"""Bottom-up training end to end: the official loss, launch/train.py, eval.py and demo.py.

The run is a tiny HigherHRNet (configs/demo_bottom_up.py at width 8, 64x64 crops) for two
steps on 16 synthetic images; its detection threshold is 0, so even this untrained model
finds people and every stage (grouping, COCO results, COCOeval, drawing) has work to do.
"""

import json
import os

import cv2
import numpy as np
import pytest

import official_reference as official
from conftest import REPO
from hrnet_jax import evaluation, steps
from test_demo import run

CONFIG = os.path.join(REPO, 'configs', 'demo_bottom_up.py')
STEPS = 2


def test_bottom_up_loss_is_the_official_composition():
  """MultiLossFactory + the trainer's batch means, float32 vs float64, rtol 1e-5."""
  rng = np.random.default_rng(0)
  n, k, h = 2, 17, 8
  quarter = rng.normal(size=(n, h, h, 2 * k)).astype(np.float32)
  half = rng.random((n, 2 * h, 2 * h, k)).astype(np.float32)
  batch = {'heatmaps_quarter': rng.random((n, h, h, k)).astype(np.float32),
           'heatmaps_half': rng.random((n, 2 * h, 2 * h, k)).astype(np.float32),
           'mask_quarter': (rng.random((n, h, h)) > 0.2).astype(np.float32),
           'mask_half': (rng.random((n, 2 * h, 2 * h)) > 0.2).astype(np.float32),
           'tag_locations': np.zeros((n, 4, k, 2), np.int32)}
  for i in range(n):
    for p in range(3):
      for j in rng.choice(k, 9, replace=False):
        batch['tag_locations'][i, p, j] = (j * h * h + rng.integers(h * h), 1)
  factors = dict(heatmap_factors=(1.0, 0.5), push_factor=1e-3, pull_factor=2e-3)
  loss, parts = steps.bottom_up_loss((quarter, half), batch, ae_type='exp', **factors)

  def nchw(x):
    return x.transpose(0, 3, 1, 2).astype(np.float64)

  heat_q = official.bottom_up_heatmap_loss(nchw(quarter[..., :k]), nchw(batch['heatmaps_quarter']),
                                           batch['mask_quarter']).mean()
  heat_h = official.bottom_up_heatmap_loss(nchw(half), nchw(batch['heatmaps_half']),
                                           batch['mask_half']).mean() * 0.5
  ae = np.array([official.ae_single_tag_loss(nchw(quarter[i:i + 1, ..., k:]).reshape(-1, 1),
                                             batch['tag_locations'][i]) for i in range(n)])
  expected = heat_q + heat_h + ae[:, 0].mean() * 1e-3 + ae[:, 1].mean() * 2e-3
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(float(parts['heatmap_loss_half']), heat_h, rtol=1e-5)
  assert ae[:, 0].min() > 0 and ae[:, 1].min() > 0


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """(workdir, dataset root, training stdout) of a two-step bottom-up run."""
  workdir = str(tmp_path_factory.mktemp('bottom_up_run'))
  root = str(tmp_path_factory.mktemp('bottom_up_data') / 'synthetic')
  result = run('train.py', f'--config={CONFIG}', f'--workdir={workdir}',
               f'--config.dataset.root={root}', '--config.dataset.synthetic.num_train=16',
               '--config.dataset.synthetic.num_val=3', '--config.dataset.input_size=64',
               '--config.model.width=8', '--config.batch_size=4',
               f'--config.num_train_steps={STEPS}', f'--config.checkpoint_every_steps={STEPS}',
               '--config.eval_every_steps=0', '--config.test.detection_threshold=0.0')
  return workdir, root, result.stdout


def test_train_py_trains_and_evaluates_a_bottom_up_config(trained):
  workdir, root, stdout = trained
  assert 'Training 2 steps (4 per epoch of 16 images, global batch 4' in stdout
  assert f'step {STEPS}/{STEPS} loss' in stdout
  assert "Evaluation 'coco' of step 2 on val: 3 images" in stdout
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == [str(STEPS)]
  with open(os.path.join(workdir, 'eval', 'val_metrics.json')) as f:
    assert sorted(json.load(f)) == sorted(evaluation.METRIC_NAMES)
  with open(os.path.join(workdir, 'eval', 'val_keypoints_results.json')) as f:
    results = json.load(f)
  with open(os.path.join(root, 'annotations', 'person_keypoints_val.json')) as f:
    val_ids = {image['id'] for image in json.load(f)['images']}
  assert results and {r['image_id'] for r in results} == val_ids
  for r in results:
    assert len(r['keypoints']) == 51 and r['category_id'] == 1
    # The official person score is the mean joint score before refine, which only adds
    # joints: at most the mean of the final scores.
    assert 0 < r['score'] <= np.mean(r['keypoints'][2::3]) + 1e-9
  per_image = [sum(r['image_id'] == i for r in results) for i in sorted(val_ids)]
  assert max(per_image) <= 30  # test.max_num_people


def test_eval_py_reproduces_the_training_evaluation(trained, tmp_path):
  workdir, _, _ = trained
  with open(os.path.join(workdir, 'eval', 'val_keypoints_results.json')) as f:
    expected = json.load(f)
  result = run('eval.py', f'--workdir={workdir}')
  assert 'bottom-up (no boxes), scales (1.0,), flip test False' in result.stdout
  with open(os.path.join(workdir, 'eval', 'val_keypoints_results.json')) as f:
    assert json.load(f) == expected


def test_demo_py_draws_a_bottom_up_model_without_boxes(trained, tmp_path):
  workdir, root, _ = trained
  folder = os.path.join(root, 'val')
  out = str(tmp_path / 'drawn')
  result = run('demo.py', f'--workdir={workdir}', f'--input={folder}', f'--output={out}',
               '--threshold=0')
  assert 'bottom-up, no boxes' in result.stdout
  names = sorted(os.listdir(folder))
  assert sorted(n for n in os.listdir(out) if n.endswith('.jpg')) == names
  for name in names:
    assert cv2.imread(os.path.join(out, name)).shape == cv2.imread(
        os.path.join(folder, name)).shape
  with open(os.path.join(out, 'keypoints.json')) as f:
    people = json.load(f)
  assert people and {p['file_name'] for p in people} <= set(names)
  refused = run('demo.py', f'--workdir={workdir}', f'--input={folder}',
                f'--output={tmp_path / "x"}', f'--boxes={tmp_path / "boxes.json"}', expect=1)
  assert 'bottom-up model, which finds every person itself; drop --boxes' in refused.stderr
