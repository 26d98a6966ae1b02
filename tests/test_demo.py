"""The demo end to end: a short configs/demo.py run learns, and launch/demo.py draws its poses.

One module-scoped training run (a smaller synthetic set, a few hundred steps of the demo
model) serves every test; each step is a real subprocess of the launch scripts.
"""

import json
import os
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest

from conftest import REPO
from hrnet_jax import config_lib, evaluators, models, sharding, tasks
from input_pipeline import coco

DEMO_CONFIG = os.path.join(REPO, 'configs', 'demo.py')
STEPS = 240
MIN_TRAINED_AP = 0.15  # measured 0.2 at 250 steps of the full demo run; untrained: 0.000


def run(script, *args, expect=0):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  result = subprocess.run([sys.executable, os.path.join(REPO, 'launch', script), *args],
                          capture_output=True, text=True, timeout=900, env=env)
  assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
  return result


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """(workdir, dataset root, training stdout) of a short demo run on 600 synthetic images."""
  workdir = str(tmp_path_factory.mktemp('demo_run'))
  root = str(tmp_path_factory.mktemp('demo_data') / 'synthetic')
  result = run('train.py', f'--config={DEMO_CONFIG}', f'--workdir={workdir}',
               f'--config.dataset.root={root}', '--config.dataset.synthetic.num_train=600',
               '--config.dataset.synthetic.num_val=24', f'--config.num_train_steps={STEPS}',
               f'--config.checkpoint_every_steps={STEPS}', '--config.eval_every_steps=0')
  return workdir, root, result.stdout


def test_short_demo_training_beats_the_untrained_model_by_far(trained):
  workdir, root, stdout = trained
  assert 'Average Precision' in stdout  # train.py evaluates at the end and prints the table
  with open(os.path.join(workdir, 'eval', 'val_metrics.json')) as f:
    trained_ap = json.load(f)['AP']
  # The same evaluation of the untrained (initial) model.
  config = config_lib.load_saved_config(workdir)
  model = models.create_model(config.model)
  width, height = config.dataset.image_size
  variables = jax.jit(lambda: model.init(jax.random.key(config.seed),
                                         np.zeros((1, height, width, 3)), train=False))()
  evals = evaluators.from_config(config, tasks.get_task(config), sharding.data_mesh())
  untrained = evals['coco'].run(variables).metrics
  assert untrained['AP'] < 0.02, untrained
  assert trained_ap >= MIN_TRAINED_AP and trained_ap > untrained['AP'] + 0.1, (
      trained_ap, untrained['AP'])


def gt_boxes_file(root, path):
  """The val set's ground-truth boxes as a COCO detection results file (score 1)."""
  with open(coco.annotation_path(root, 'val')) as f:
    annotations = json.load(f)['annotations']
  detections = [{'image_id': a['image_id'], 'category_id': 1, 'bbox': a['bbox'], 'score': 1.0}
                for a in annotations if a.get('num_keypoints', 0) > 0]
  with open(path, 'w') as f:
    json.dump(detections, f)
  return annotations


def test_demo_draws_keypoints_near_the_ground_truth(trained, tmp_path):
  workdir, root, _ = trained
  boxes = str(tmp_path / 'boxes.json')
  annotations = gt_boxes_file(root, boxes)
  out = tmp_path / 'drawn'
  result = run('demo.py', f'--workdir={workdir}', f'--input={os.path.join(root, "val")}',
               f'--output={out}', f'--boxes={boxes}')
  assert 'Wrote' in result.stdout
  with open(out / 'keypoints.json') as f:
    people = json.load(f)
  # Match each predicted person to its ground truth (same image, same box order).
  by_image = {}
  for a in annotations:
    if a.get('num_keypoints', 0) > 0:
      by_image.setdefault(a['image_id'], []).append(np.reshape(a['keypoints'], (17, 3)))
  errors = []
  for image_id, truths in by_image.items():
    mine = [np.reshape(p['keypoints'], (17, 3)) for p in people if p['image_id'] == image_id]
    assert len(mine) == len(truths)
    for pred, truth in zip(mine, truths):
      visible = truth[:, 2] == 2
      errors.extend(np.linalg.norm(pred[visible, :2] - truth[visible, :2], axis=1))
  assert np.median(errors) < 4.0, np.percentile(errors, [50, 75, 90])
  # The drawing: skeleton colours where the keypoints are, the rest of the image kept.
  name = sorted(os.listdir(os.path.join(root, 'val')))[0]
  original = cv2.imread(os.path.join(root, 'val', name))
  drawn = cv2.imread(str(out / name))
  assert drawn.shape == original.shape
  changed = np.abs(drawn.astype(int) - original.astype(int)).sum(-1) > 60
  assert 0.001 < changed.mean() < 0.3


def test_demo_on_a_video_writes_a_playable_mp4_with_every_frame(trained, tmp_path):
  workdir, root, _ = trained
  names = sorted(os.listdir(os.path.join(root, 'val')))[:5]
  size = (320, 240)
  video = str(tmp_path / 'input.mp4')
  writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'mp4v'), 10, size)
  for name in names * 3:  # 15 frames
    writer.write(cv2.resize(cv2.imread(os.path.join(root, 'val', name)), size))
  writer.release()
  out = str(tmp_path / 'output.mp4')
  result = run('demo.py', f'--workdir={workdir}', f'--input={video}', f'--output={out}',
               '--detector=none')
  assert 'whole images as boxes' in result.stdout
  assert 'Wrote' in result.stdout and '15 frames' in result.stdout
  assert 'frame/s' not in result.stderr  # no progress bar when stderr is not a terminal
  capture = cv2.VideoCapture(out)
  frames = 0
  while capture.read()[0]:
    frames += 1
  assert frames == 15 and int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == 320
  assert capture.get(cv2.CAP_PROP_FPS) == 10  # the input's frame rate
  with open(out + '.json') as f:
    people = json.load(f)
  assert sorted({p['frame'] for p in people}) == list(range(15))  # whole frame: one each
  # An existing output is never overwritten.
  again = run('demo.py', f'--workdir={workdir}', f'--input={video}', f'--output={out}',
              expect=1)
  assert 'refusing to overwrite' in again.stderr
