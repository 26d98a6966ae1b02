"""The real samples of COCO, MPII, CrowdPose and PoseTrack18 as their datasets ship them.

tests/fixtures/real_data/ is a copy of mmpose's test data (see its README): quirks included
(MPII's official json, CrowdPose without ``area``, PoseTrack18's root-relative file names,
per-video files and 11-digit ids). Each dataset is read, batched, and scored by its own
metric: an oracle (the ground truth through heatmaps and the official decoding) scores
perfectly, and a tiny model trains, evaluates and draws through the command-line tools.
"""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from scipy.io import savemat

from conftest import FIXTURES, REPO, random_variables
from hrnet_jax import config_lib, decode, evaluators, keypoints as kp, mpii, sharding, tasks
from input_pipeline import coco, datasets, mpii_convert, pipeline, transforms
import tiny_config

REAL = os.path.join(FIXTURES, 'real_data')
TRAIN = os.path.join(REPO, 'launch', 'train.py')
EVAL = os.path.join(REPO, 'launch', 'eval.py')
DEMO = os.path.join(REPO, 'launch', 'demo.py')
TINY = os.path.join(REPO, 'tests', 'tiny_config.py')

# How each sample is laid out: the recipe it is read with and the overrides that point the
# recipe at the sample (its annotation file names are mmpose's, not the datasets' own).
SAMPLES = {
    'coco': ('coco_w32', {'root': 'coco', 'annotations': 'test_coco.json',
                          'bbox_file': 'test_coco_det_AP_H_56.json'}),
    'mpii': ('mpii_w32_256x256', {'root': 'mpii', 'annotations': 'test_mpii.json'}),
    'crowdpose': ('crowdpose_w32_256x192', {'root': 'crowdpose',
                                            'annotations': 'test_crowdpose.json',
                                            'bbox_file': 'test_crowdpose_det_AP_40.json'}),
    'crowdpose_bottom_up': ('crowdpose_higherhrnet_w32_512', {
        'root': 'crowdpose', 'annotations': 'test_crowdpose.json'}),
    'posetrack18': ('posetrack18_w32_256x192', {
        'root': 'posetrack18',
        'bbox_file': 'annotations/test_posetrack18_human_detections.json'}),
}


def sample_config(name, tiny=False):
  """The recipe of a sample, pointed at it (val and train: the sample's one split)."""
  recipe, where = SAMPLES[name]
  config = tiny_config.get_config(recipe) if tiny else tiny_config.load_recipe(recipe)
  config.dataset.root = os.path.join(REAL, where['root'])
  config.dataset.annotations = where.get('annotations', config.dataset.annotations)
  config.dataset.train_split = config.dataset.val_split
  if 'bbox_file' in where:
    config.test.bbox_file = where['bbox_file']
  return config


def cli_overrides(name):
  """The same pointing as command-line flags of launch/train.py."""
  recipe, where = SAMPLES[name]
  config = sample_config(name)
  flags = [f'--config={TINY}:{recipe}', f'--config.dataset.root={config.dataset.root}',
           f'--config.dataset.train_split={config.dataset.val_split}']
  if 'annotations' in where:
    flags.append(f'--config.dataset.annotations={where["annotations"]}')
  if 'bbox_file' in where:
    flags.append(f'--config.test.bbox_file={where["bbox_file"]}')
  return flags


def run(args, expect=0):
  result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
  return result.stdout + result.stderr


# ---------------------------------------------------------------------------- reading ---


@pytest.mark.parametrize('name, people, joints', [('coco', 12, 17), ('mpii', 5, 16),
                                                  ('crowdpose', 4, 14), ('posetrack18', 14, 17)])
def test_each_sample_reads_and_batches(name, people, joints):
  config = sample_config(name)
  split = datasets.read_split(config, config.dataset.val_split)
  assert all(os.path.isfile(image['path']) for image in split.images)
  spec = tasks.sample_spec(config)
  instances = coco.load_ground_truth(split, aspect_ratio=spec.aspect_ratio,
                                     num_joints=joints, padding=config.dataset.box_padding)
  assert len(instances) == people and instances.keypoints.shape[1:] == (joints, 3)
  batch = next(iter(pipeline.TrainIterator(instances, spec, 4, seed=0)))
  assert batch['image'].shape == (4, *config.dataset.image_size[::-1], 3)
  assert batch['heatmaps'].shape == (4, *config.dataset.heatmap_size[::-1], joints)
  assert np.isfinite(batch['image']).all() and batch['heatmaps'].max() > 0.5


def test_posetrack_ids_and_paths_as_shipped():
  """11-digit ids, file names relative to the dataset root, per-video or merged files."""
  config = sample_config('posetrack18')
  per_video = datasets.read_split(config, 'val')
  config.dataset.annotations = 'annotations/test_posetrack18_val.json'
  merged = datasets.read_split(config, 'val')
  assert per_video.source.endswith(os.path.join('annotations', 'val'))
  assert sorted(i['id'] for i in per_video.images) == sorted(i['id'] for i in merged.images)
  assert min(i['id'] for i in merged.images) > 2**31  # beyond int32
  assert merged.images[0]['path'] == os.path.join(REAL, 'posetrack18',
                                                  merged.images[0]['file_name'])


def test_a_missing_image_is_named_before_any_step(tmp_path):
  data = json.load(open(os.path.join(REAL, 'crowdpose', 'test_crowdpose.json')))
  data['images'][0]['file_name'] = 'gone.jpg'
  (tmp_path / 'a.json').write_text(json.dumps(data))
  for image in data['images'][1:]:
    os.symlink(os.path.join(REAL, 'crowdpose', image['file_name']),
               tmp_path / image['file_name'])
  with pytest.raises(coco.DatasetError, match=r"1 image file\(s\) not found, e.g. 'gone.jpg'"):
    coco.read_split(str(tmp_path), 'test', annotations='a.json')
  split = coco.read_split(str(tmp_path), 'test', annotations='a.json', skip_missing=True)
  assert split.skipped == ('gone.jpg',) and len(split.images) == len(data['images']) - 1
  assert all(a['image_id'] != data['images'][0]['id'] for a in split.annotations)


def test_mpii_crops_equal_the_official_reader():
  """The official MPIIDataset._get_db, transcribed: centre down 15 x scale, scale x 1.25,
  both minus 1 (MATLAB's 1-based pixels), joints minus 1."""
  records = json.load(open(os.path.join(REAL, 'mpii', 'test_mpii.json')))
  config = sample_config('mpii')
  instances = coco.load_ground_truth(datasets.read_split(config, 'valid'), aspect_ratio=1.0,
                                     num_joints=16)
  order = np.argsort(instances.annotation_ids)
  for record, row in zip(records, order):
    c = np.array(record['center'], np.float64)
    s = np.array([record['scale'], record['scale']], np.float64)
    c[1] = c[1] + 15 * s[1]
    s = s * 1.25
    c = c - 1
    np.testing.assert_allclose(instances.centers[row], c, rtol=1e-7)  # float32 storage
    np.testing.assert_allclose(instances.scales[row], s, rtol=1e-7)
    visible = np.array(record['joints_vis']) > 0
    np.testing.assert_allclose(instances.keypoints[row, visible, :2],
                               np.array(record['joints'])[visible] - 1, atol=1e-12)


def test_posetrack_flip_keeps_head_bottom_and_head_top():
  keypoint_set = kp.preset('posetrack18')
  keypoints = np.zeros((17, 3))
  keypoints[:, 0] = np.arange(17) * 3.0 + 10
  keypoints[:, 1] = 40.0
  keypoints[:, 2] = 1
  out = transforms.warp_and_target(
      np.zeros((100, 100, 3), np.float32), keypoints, np.array([50.0, 50.0]),
      np.array([0.5, 0.5]), 0.0, True, image_size=(100, 100), heatmap_size=(25, 25), sigma=2,
      flip_pairs=keypoint_set.flip_pairs)
  x = out['keypoints'].numpy()[:, 0]
  # The official flip: x -> W - 1 - x and the centre likewise; a 100-pixel box of a
  # 100-pixel image maps 1:1, so a joint lands at (99 - x) - (99 - 50) + 50.
  mirrored = 100 - keypoints[:, 0]
  perm = keypoint_set.flip_permutation()
  np.testing.assert_allclose(x, mirrored[perm], atol=1e-6)
  assert perm[1] == 1 and perm[2] == 2 and perm[3] == 4  # head joints stay, ears swap
  np.testing.assert_allclose(x[1:3], mirrored[1:3], atol=1e-6)


# ---------------------------------------------------------------------------- oracles ---


def oracle_keypoints(config, instances):
  """The ground truth of each instance drawn as heatmaps in its eval crop, decoded as the
  predictor decodes (official argmax with the quarter offset) and mapped back to the image."""
  d = config.dataset
  matrices = [transforms.affine_matrix(c, s, 0.0, d.heatmap_size).numpy()
              for c, s in zip(instances.centers, instances.scales)]
  joints = np.stack([transforms.apply_affine(k[:, :2], m).numpy()
                     for k, m in zip(instances.keypoints, matrices)])
  heatmaps, _ = transforms.gaussian_targets(
      np.concatenate([joints * 4, instances.keypoints[..., 2:]], -1), image_size=d.image_size,
      heatmap_size=d.heatmap_size, sigma=d.sigma)
  coords, maxvals = decode.heatmap_coordinates(np.asarray(heatmaps), True)
  xy = decode.to_image_coordinates(np.asarray(coords), instances.centers, instances.scales,
                                   d.heatmap_size)
  labelled = instances.keypoints[..., 2:] > 0
  return np.concatenate([xy, np.where(labelled, np.asarray(maxvals)[..., None], 0)], -1)


@pytest.mark.parametrize('name, evaluator, metric, perfect', [
    ('coco', 'coco_keypoints', 'AP', 1.0),
    ('crowdpose', 'crowdpose_keypoints', 'AP', 1.0),
    ('posetrack18', 'posetrack_map', 'Total', 100.0),
    ('posetrack18', 'coco_keypoints', 'AP', 1.0),
])
def test_oracle_scores_perfectly(name, evaluator, metric, perfect):
  config = sample_config(name)
  config.dataset.image_size, config.dataset.heatmap_size = (192, 256), (48, 64)
  split = datasets.read_split(config, config.dataset.val_split)
  instances = coco.load_ground_truth(split, aspect_ratio=0.75,
                                     num_joints=config.model.num_joints)
  found = {'keypoints': oracle_keypoints(config, instances), 'score': instances.scores,
           'image_id': instances.image_ids, 'center': instances.centers,
           'scale': instances.scales}
  results = tasks.coco_results(config, found)
  source = types.SimpleNamespace(ground_truth=split.data, split='val')
  scorer = evaluators.TYPES[evaluator](source, config)
  metrics, table = scorer.score(results)
  assert metrics[metric] == pytest.approx(perfect, abs=1e-9), table


def test_mpii_oracle_scores_pckh_100(tmp_path):
  config = sample_config('mpii')
  split = datasets.read_split(config, 'valid')
  instances = coco.load_ground_truth(split, aspect_ratio=1.0, num_joints=16)
  config.dataset.heatmap_size = (64, 64)
  found = oracle_keypoints(config, instances)
  truth = mpii.ground_truth_of_records([dict(a, headbox=head_box(a)) for a in split.annotations])
  order = np.argsort(instances.annotation_ids)
  table = mpii.pckh_table(found[order, :, :2], truth['joints'], truth['visible'],
                          truth['headboxes'])
  assert table['Mean'] == pytest.approx(100.0, abs=1e-9), table
  assert table['Mean@0.1'] == pytest.approx(100.0, abs=1e-9), table


def head_box(annotation):
  """A head box for the sample, which has none: the square on upper neck - head top."""
  k = np.array(annotation['keypoints']).reshape(16, 3)
  neck, top = k[kp.MPII_KEYPOINT_NAMES.index('upper_neck'), :2], k[
      kp.MPII_KEYPOINT_NAMES.index('head_top'), :2]
  centre, side = (neck + top) / 2, np.linalg.norm(top - neck)
  return [*(centre - side / 2), *(centre + side / 2)]


def write_gt_valid_mat(path):
  """The official gt_valid.mat layout for the 5 sample records, head boxes from head_box."""
  records = json.load(open(os.path.join(REAL, 'mpii', 'test_mpii.json')))
  coco_form = mpii_convert.to_coco(records)['annotations']
  short = ('rank', 'rkne', 'rhip', 'lhip', 'lkne', 'lank', 'pelv', 'thor', 'neck', 'head',
           'rwri', 'relb', 'rsho', 'lsho', 'lelb', 'lwri')
  names = np.empty((1, 16), object)
  names[0, :] = short
  boxes = np.array([head_box(a) for a in coco_form]).reshape(-1, 2, 2) + 1  # 1-based
  savemat(path, {'dataset_joints': names,
                 'jnt_missing': 1 - np.array([r['joints_vis'] for r in records]).T,
                 'pos_gt_src': np.transpose(np.array([r['joints'] for r in records]), (1, 2, 0)),
                 'headboxes_src': np.transpose(boxes, (1, 2, 0))})


# ------------------------------------------------------------------- the command line ---


def test_mpii_trains_evaluates_and_draws(tmp_path):
  """launch/train.py, launch/eval.py (the PCKh table) and launch/demo.py on the sample."""
  write_gt_valid_mat(str(tmp_path / 'gt_valid.mat'))
  workdir = str(tmp_path / 'run')
  headbox = f'--config.evals.pckh.headbox_file={tmp_path / "gt_valid.mat"}'
  out = run([TRAIN, *cli_overrides('mpii'), f'--workdir={workdir}', headbox])
  assert 'Evaluation \'pckh\' of step 2' in out and '| PCKh@0.5 |' in out, out[-3000:]
  out = run([EVAL, f'--workdir={workdir}'])
  assert '| Arch | Head | Shoulder | Elbow | Wrist | Hip | Knee | Ankle | Mean |' in out
  metrics = json.load(open(os.path.join(workdir, 'eval', 'valid_pckh.json')))
  assert 0 <= metrics['Mean'] <= 100
  image = os.path.join(REAL, 'mpii', '005808361.jpg')
  run([DEMO, f'--workdir={workdir}', f'--input={image}', f'--output={tmp_path / "drawn.jpg"}'])
  drawn = json.load(open(tmp_path / 'drawn.jpg.json'))
  assert len(drawn[0]['keypoints']) == 16 * 3


@pytest.mark.parametrize('name, tables, image', [
    ('crowdpose', ['Average Recall     (AR) @[ IoU=0.50:0.95 | type=  hard'], None),
    ('crowdpose_bottom_up', ['Average Recall     (AR) @[ IoU=0.50:0.95 | type=  hard'],
     '103319.jpg'),
    ('posetrack18', ['Total', 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all'],
     'images/val/009473_mpii_test/000000.jpg'),
])
def test_sample_trains_evaluates_and_draws(tmp_path, name, tables, image):
  """launch/train.py of the dataset's recipe (tiny model) ends with its evaluators' tables;
  launch/demo.py draws the model's joints (the set's count) on one of the sample's images
  (CrowdPose: with the bottom-up model; MPII's top-down demo is below)."""
  workdir = str(tmp_path / 'run')
  # An untrained bottom-up model's peaks are faint: keep them all, so people are grouped.
  keep_all = ['--config.test.detection_threshold=0.0'] if 'bottom_up' in name else []
  out = run([TRAIN, *cli_overrides(name), f'--workdir={workdir}', *keep_all])
  for evaluator in sample_config(name).evals:
    assert f"Evaluation '{evaluator}' of step 2" in out, out[-3000:]
  for line in tables:
    assert line in out, out[-3000:]
  if image is None:
    return
  config = sample_config(name)
  run([DEMO, f'--workdir={workdir}', f'--input={os.path.join(config.dataset.root, image)}',
       f'--output={tmp_path / "drawn.jpg"}', '--person_threshold=0'])
  assert os.path.getsize(tmp_path / 'drawn.jpg') > 0
  people = json.load(open(tmp_path / 'drawn.jpg.json'))
  assert people and all(len(p['keypoints']) == 3 * config.model.num_joints for p in people)


CUSTOM = os.path.join(FIXTURES, 'configs', 'custom_14_joints.py')


def test_a_keypoint_set_written_in_a_config_file_trains_and_evaluates(tmp_path):
  crowdpose = os.path.join(REAL, 'crowdpose')
  workdir = str(tmp_path / 'run')
  out = run([TRAIN, f'--config={CUSTOM}', f'--workdir={workdir}',
             f'--config.dataset.root={crowdpose}',
             '--config.dataset.annotations=test_crowdpose.json',
             '--config.dataset.train_split=test', '--config.dataset.val_split=test',
             '--config.test.use_gt_bbox=True'])
  assert "Evaluation 'coco' of step 2" in out, out[-3000:]
  saved = json.load(open(os.path.join(workdir, 'config.json')))
  assert saved['keypoints']['name'] == 'my_14' and len(saved['keypoints']['names']) == 14


def test_a_wrong_joint_count_is_a_clear_start_up_error(tmp_path):
  config = sample_config('crowdpose')
  coco17 = config_lib.override(config, {'keypoints': config_lib.keypoints_config('coco'),
                                        'model.num_joints': 17})
  with pytest.raises(coco.DatasetError, match='the person category has 14 keypoints .* but '
                     'the config has 17 joints'):
    datasets.read_split(coco17, 'test')
  mismatch = config_lib.override(config, {'model.num_joints': 17})
  with pytest.raises(KeyError, match=r"config.keypoints \('crowdpose'\) has 14 joints but "
                     r'config.model.num_joints is 17'):
    tasks.get_task(mismatch).training_data()
  out = run([TRAIN, f'--config={CUSTOM}', f'--workdir={tmp_path / "bad"}',
             f'--config.dataset.root={os.path.join(REAL, "coco")}',
             '--config.dataset.annotations=test_coco.json'], expect=1)
  assert 'has 17 keypoints' in out and 'the config has 14 joints' in out, out[-2000:]


def test_evaluation_names_an_unreadable_image(tmp_path):
  for name in os.listdir(os.path.join(REAL, 'crowdpose')):
    os.symlink(os.path.join(REAL, 'crowdpose', name), tmp_path / name)
  os.remove(tmp_path / '103319.jpg')
  (tmp_path / '103319.jpg').write_bytes(b'\xff\xd8\xff not a JPEG')
  config = sample_config('crowdpose', tiny=True)
  config.dataset.root, config.test.use_gt_bbox = str(tmp_path), True
  source = tasks.get_task(config).val_source(sharding.data_mesh())
  with pytest.raises(pipeline.DataError, match='103319.jpg: cannot read or decode the image'):
    source.crop_keypoints(random_variables(config.model))


def test_joint_weights_of_the_set_weigh_the_targets():
  """The official USE_DIFFERENT_JOINTS_WEIGHT: target_weight x the set's per-joint weights."""
  weights = (1.0, 1.5, 1.2, 0.5)
  spec = pipeline.SampleSpec((16, 16), (4, 4), 2.0, (), (), joint_weights=weights)
  keypoints = np.array([[[4.0, 4.0, 1], [8.0, 8.0, 1], [12.0, 4.0, 1], [40.0, 8.0, 1]]])
  batch = pipeline.finish_training_batch(spec)({'image': np.zeros((1, 16, 16, 3), np.float32),
                                                'keypoints': keypoints})
  # The fourth joint lies outside the crop: weight 0 whatever the set says.
  np.testing.assert_array_equal(batch['target_weight'][0, :, 0],
                                np.float32([1.0, 1.5, 1.2, 0.0]))  # exact, in float32
