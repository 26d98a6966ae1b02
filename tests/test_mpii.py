"""MPII: PCKh against the official evaluation (transcribed), and the MPII -> COCO converter."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from scipy.io import loadmat, savemat

import official_reference as ref
from conftest import REPO
from hrnet_jax import keypoints as kp, mpii
from input_pipeline import coco, mpii_convert

PCKH_TOL = 1e-9  # percent; the same float64 arithmetic as the official code
SHORT = ('rank', 'rkne', 'rhip', 'lhip', 'lkne', 'lank', 'pelv', 'thor', 'neck', 'head',
         'rwri', 'relb', 'rsho', 'lsho', 'lelb', 'lwri')  # gt_valid.mat's dataset_joints


def fake_gt_mat(path, n, rng):
  """A gt_valid.mat with the official layout: MATLAB 1-based joints, (16, 2, N) etc."""
  joints = rng.uniform(20, 300, (16, 2, n))
  missing = (rng.random((16, n)) < 0.15).astype(np.float64)
  top_left = rng.uniform(0, 200, (2, n))
  headboxes = np.stack([top_left, top_left + rng.uniform(15, 50, (2, n))])
  names = np.empty((1, 16), object)
  for i, name in enumerate(SHORT):
    names[0, i] = name
  savemat(path, {'dataset_joints': names, 'jnt_missing': missing, 'pos_gt_src': joints,
                 'headboxes_src': headboxes})


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_pckh_equals_the_official_evaluation(tmp_path, seed):
  rng = np.random.default_rng(seed)
  path = str(tmp_path / 'gt_valid.mat')
  fake_gt_mat(path, 300, rng)
  gt = mpii.load_ground_truth_mat(path)
  preds = gt['joints'] + rng.normal(0, 6, gt['joints'].shape)  # 0-based, like the model's
  ours = mpii.pckh_table(preds, gt['joints'], gt['visible'], gt['headboxes'])
  official = dict(ref.mpii_evaluate(preds, loadmat(path)))
  for name in ('Head', 'Shoulder', 'Elbow', 'Wrist', 'Hip', 'Knee', 'Ankle', 'Mean'):
    assert ours[name] == pytest.approx(float(official[name]), abs=PCKH_TOL), name
  assert ours[mpii.OFFICIAL_MEAN_AT_0_1] == pytest.approx(float(official['Mean@0.1']),
                                                          abs=PCKH_TOL)
  assert 5 < ours['Mean@0.1'] < ours['Mean'] < 100  # a real spread, at both thresholds
  assert set(ours) >= {'Head@0.1', 'Ankle@0.1'}


def test_perfect_predictions_score_100(tmp_path):
  path = str(tmp_path / 'gt_valid.mat')
  fake_gt_mat(path, 50, np.random.default_rng(4))
  gt = mpii.load_ground_truth_mat(path)
  table = mpii.pckh_table(gt['joints'], gt['joints'], gt['visible'], gt['headboxes'])
  assert all(v == pytest.approx(100.0, abs=1e-9) for v in table.values()), table


def test_mpii_json_to_coco_reads_as_16_joint_people(tmp_path):
  rng = np.random.default_rng(0)
  images = tmp_path / 'images'
  images.mkdir()
  records = []
  for i in range(3):
    name = f'{i:09d}.jpg'
    cv2.imwrite(str(images / name), np.zeros((240 + i, 320, 3), np.uint8))
    for _ in range(2):
      joints = rng.uniform(40, 200, (16, 2))
      vis = (rng.random(16) > 0.2).astype(int)
      records.append({'image': name, 'center': [160.0, 120.0], 'scale': 1.1,
                      'joints': joints.tolist(), 'joints_vis': vis.tolist()})
  source = tmp_path / 'valid.json'
  source.write_text(json.dumps(records))
  out = tmp_path / 'annotations' / 'person_keypoints_valid.json'
  result = subprocess.run([sys.executable, os.path.join(REPO, 'launch', 'mpii_to_coco.py'),
                           f'--input={source}', f'--images={images}', f'--output={out}'],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '3 images, 6 people' in result.stdout
  (tmp_path / 'valid').symlink_to(images)
  people = coco.load_ground_truth(str(tmp_path), 'valid', aspect_ratio=1.0, num_joints=16)
  assert len(people) == 6
  expected = np.array([r['joints'] for r in records]) - 1.0  # 1-based MATLAB -> 0-based
  vis = np.array([r['joints_vis'] for r in records]) > 0
  np.testing.assert_allclose(people.keypoints[..., :2][vis], expected[vis], atol=1e-12)
  assert np.all(people.keypoints[..., 2][vis] == 2) and np.all(people.keypoints[..., 2][~vis] == 0)
  dataset = json.loads(out.read_text())
  assert [im['height'] for im in dataset['images']] == [240, 241, 242]
  assert dataset['categories'][0]['keypoints'] == list(kp.MPII_KEYPOINT_NAMES)
  # Refuses to overwrite its output, and names a record without the official keys.
  again = subprocess.run([sys.executable, os.path.join(REPO, 'launch', 'mpii_to_coco.py'),
                          f'--input={source}', f'--output={out}'],
                         capture_output=True, text=True, timeout=120)
  assert again.returncode == 1 and 'refusing to overwrite' in again.stderr
  with pytest.raises(ValueError, match=r'record 0 has joints of shape \(0,\)'):
    mpii_convert.to_coco([{'image': 'a.jpg', 'center': [0, 0], 'scale': 1, 'joints': []}])
  with pytest.raises(ValueError, match="record 0 has no 'scale'"):
    mpii_convert.to_coco([{'image': 'a.jpg', 'center': [0, 0]}])
