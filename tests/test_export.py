"""Export: BatchNorm folding, ONNX (run by ONNX Runtime), TF SavedModel, TFLite and StableHLO,
against the official heatmaps and the JAX model; launch/export.py's guards."""

import glob
import json
import os
import subprocess
import sys

import jax
import numpy as np
import onnxruntime as ort
import pytest

from conftest import OFFICIAL, OFFICIAL_HIGHER, REFERENCE, REPO, random_variables, small_config
from hrnet_jax import config_lib, decode, errors, export, models, tasks, weights
from test_higher_hrnet import small_higher_config

# float32 parity, as the model tests: max |exported - expected| <= 1e-4 x max |expected|.
RTOL_OF_MAX = 1e-4


def error_of_max(actual, expected) -> float:
  expected = np.asarray(expected)
  return float(np.abs(np.asarray(actual) - expected).max() / np.abs(expected).max())


def run_onnx(data: bytes, images: np.ndarray) -> list[np.ndarray]:
  session = ort.InferenceSession(data, providers=['CPUExecutionProvider'])
  return session.run(None, {'image': images})


@pytest.fixture(scope='module')
def official():
  """The official small HRNet (its variables, model config) and its official input/heatmaps
  in NHWC."""
  config = small_config()
  variables = weights.load_torch_checkpoint(os.path.join(OFFICIAL, 'small_hrnet.pth'), config)
  io = np.load(os.path.join(OFFICIAL, 'small_hrnet_io.npz'))
  return (config, variables, io['input_nchw'].transpose(0, 2, 3, 1),
          io['heatmaps_nchw'].transpose(0, 2, 3, 1))


@pytest.fixture(scope='module')
def official_onnx(official):
  config, variables, images, _ = official
  return export.to_onnx(export.network(config, variables, images.shape[1:3]))


def test_folded_batch_norm_leaves_no_batch_norm_and_the_same_heatmaps(official):
  config, variables, images, expected = official
  model = models.create_model(config)
  pairs = export.batch_norm_pairs(model, variables, images.shape[1:3])
  assert pairs and all(conv is not None for conv, _ in pairs.values())  # every BN follows a conv
  folded = export.folded_apply(model, variables, images.shape[1:3])
  assert error_of_max(jax.jit(folded)(images), expected) <= RTOL_OF_MAX


def test_onnx_equals_the_official_heatmaps_at_any_batch(official, official_onnx):
  _, _, images, expected = official
  import onnx
  graph = onnx.load_from_string(official_onnx).graph
  assert 'BatchNormalization' not in {n.op_type for n in graph.node}
  assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == export.BATCH
  heatmaps, = run_onnx(official_onnx, images)
  assert error_of_max(heatmaps, expected) <= RTOL_OF_MAX
  one, = run_onnx(official_onnx, images[:1])  # the dynamic batch dimension
  assert error_of_max(one, expected[:1]) <= RTOL_OF_MAX


def test_onnx_in_nchw(official):
  config, variables, images, expected = official
  data = export.to_onnx(export.network(config, variables, images.shape[1:3]), nchw=True)
  heatmaps, = run_onnx(data, images.transpose(0, 3, 1, 2).copy())
  assert error_of_max(heatmaps, expected.transpose(0, 3, 1, 2)) <= RTOL_OF_MAX


@pytest.mark.parametrize('case', sorted(glob.glob(os.path.join(REFERENCE, 'w*.npz'))),
                         ids=os.path.basename)
def test_onnx_of_other_widths_and_sizes_equals_the_reference(case):
  data = np.load(case)
  config = models.pose_hrnet_config(
      int(data['width']), int(data['num_blocks']), tuple(int(m) for m in data['num_modules']),
      int(data['num_joints']), int(data['final_conv_kernel']))
  variables = weights.load_torch_checkpoint(case[:-4] + '.pth', config)
  images = data['input_nchw'].transpose(0, 2, 3, 1)
  heatmaps, = run_onnx(export.to_onnx(export.network(config, variables, images.shape[1:3])),
                       images)
  assert error_of_max(heatmaps, data['heatmaps_nchw'].transpose(0, 2, 3, 1)) <= RTOL_OF_MAX


def test_onnx_of_the_official_higher_hrnet_gives_both_official_outputs():
  config = small_higher_config()
  variables = weights.load_torch_checkpoint(
      os.path.join(OFFICIAL_HIGHER, 'small_higher_hrnet.pth'), config)
  io = np.load(os.path.join(OFFICIAL_HIGHER, 'small_higher_hrnet_io.npz'))
  images = io['input_nchw'].transpose(0, 2, 3, 1)
  quarter, half = run_onnx(export.to_onnx(export.network(config, variables, (256, 256),
                                                         ('quarter', 'half'))), images)
  assert error_of_max(quarter, io['output_stage1_nchw'].transpose(0, 2, 3, 1)) <= RTOL_OF_MAX
  assert error_of_max(half, io['output_stage2_nchw'].transpose(0, 2, 3, 1)) <= RTOL_OF_MAX


def test_decoded_head_gives_the_predictors_coordinates(official):
  config, variables, images, _ = official
  recipe = config_lib.load_recipe(os.path.join(REPO, 'configs', 'small_hrnet.py'))
  exported = tasks.get_task(recipe).exportable(variables, head='decoded')
  assert exported.output_names == ('coords', 'maxvals')
  coords, maxvals = run_onnx(export.to_onnx(exported), images)
  model = models.create_model(config)
  expected = jax.jit(lambda x: decode.crop_outputs_function(recipe)(
      lambda y: model.apply(variables, y, train=False), x))(images)
  # Flip test and argmax on the folded network: the same pixels and maxvals to 1e-5.
  np.testing.assert_allclose(maxvals, expected['maxvals'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(coords, expected['coords'], rtol=0, atol=1e-4)


def test_stablehlo_reloads_to_the_jax_output(official, tmp_path):
  config, variables, images, _ = official
  exported = export.network(config, variables, images.shape[1:3])
  path = tmp_path / 'model.stablehlo'
  path.write_bytes(export.to_stablehlo(exported))
  heatmaps, = export.load_stablehlo(str(path))(images)
  np.testing.assert_allclose(heatmaps, jax.jit(exported.fn)(images), rtol=0, atol=1e-6)


def test_tflite_float32_and_float16_weights(official):
  config, variables, images, expected = official
  exported = export.network(config, variables, images.shape[1:3])
  for float16, tolerance in ((False, RTOL_OF_MAX), (True, 1e-2)):
    heatmaps = export.run_tflite(export.to_tflite(exported, float16), images)['heatmaps']
    assert error_of_max(heatmaps, expected) <= tolerance, float16


def test_saved_model_serves_the_heatmaps(official, tmp_path):
  import tensorflow as tf
  config, variables, images, expected = official
  export.to_saved_model(export.network(config, variables, images.shape[1:3]),
                        str(tmp_path / 'saved'))
  served = tf.saved_model.load(str(tmp_path / 'saved')).signatures['serving_default']
  assert error_of_max(served(image=images)['heatmaps'].numpy(), expected) <= RTOL_OF_MAX


def run_export(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, 'launch', 'export.py'), *args],
                        capture_output=True, text=True, cwd=REPO, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))


def test_launch_export_writes_each_format_once_and_refuses_a_mismatched_model(tmp_path):
  pth = os.path.join(OFFICIAL, 'small_hrnet.pth')
  out = tmp_path / 'exported'
  result = run_export(f'--model={pth}', '--config=configs/small_hrnet.py', f'--output={out}',
                      '--formats=onnx,stablehlo')
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(os.listdir(out)) == ['export.json', 'model.onnx', 'model.stablehlo']
  with open(out / 'export.json') as f:
    spec = json.load(f)
  assert spec['input']['shape'] == ['batch', 128, 96, 3] and spec['outputs'] == ['heatmaps']
  # What the command does before writing, in this process: existing files are refused, and a
  # checkpoint that does not match the config is an error naming the tensor.
  exported = export.network(small_config(), random_variables(small_config()), (128, 96))
  with pytest.raises(errors.ExistingFileError, match='model.onnx already exist'):
    export.export(exported, str(out), ['onnx'])
  with pytest.raises(errors.UserError, match='export format'):
    export.export(exported, str(tmp_path / 'x'), ['onnx', 'pt'])
  from hrnet_jax import estimator
  with pytest.raises(errors.UserError, match='shape'):
    estimator.load_model(pth, config_lib.load_recipe(os.path.join(REPO, 'configs', 'coco_w32.py')))
  assert not (tmp_path / 'x').exists()


def test_the_onnxruntime_backend_gives_the_jax_backends_people():
  """PoseEstimator(backend='onnxruntime') on the real COCO photos and their real detections.

  Without flip test and sub-pixel shift a keypoint is its heatmap's argmax mapped back, so
  the two backends' heatmaps (equal to ~1e-6) give the same keypoints except where two
  pixels tie to that precision; joints whose best two heatmap pixels are 1e-4 of the maximum
  apart or closer are not compared (a handful at most).
  """
  from hrnet_jax import PoseEstimator, detectors
  coco = os.path.join(REPO, 'tests', 'fixtures', 'real_data', 'coco')
  found = detectors.DetectionsFile(os.path.join(coco, 'test_coco_det_AP_H_56.json'))
  recipe = config_lib.override(
      config_lib.load_recipe(os.path.join(REPO, 'configs', 'small_hrnet.py')),
      {'test.flip_test': False, 'test.post_process': False})
  pth = os.path.join(OFFICIAL, 'small_hrnet.pth')
  backends = {name: PoseEstimator(pth, config=recipe, detector=None, backend=name)
              for name in ('jax', 'onnxruntime')}
  compared = skipped = 0
  for name in sorted(n for n in os.listdir(coco) if n.endswith('.jpg')):
    path = os.path.join(coco, name)
    boxes, scores = found.for_image(int(name[:-4]))
    people = {k: e.predict([e.read(path)], [boxes], [scores])[0] for k, e in backends.items()}
    assert len(people['jax']) == len(people['onnxruntime']) == len(boxes)
    maps = backends['jax'].heatmaps(path, boxes=boxes)
    for p, q, (heatmaps, _) in zip(people['jax'], people['onnxruntime'], maps):
      np.testing.assert_allclose(q.joint_scores, p.joint_scores, rtol=1e-4, atol=1e-6)
      assert abs(q.score - p.score) <= 1e-4
      flat = np.sort(heatmaps.reshape(-1, heatmaps.shape[-1]), axis=0)
      clear = (flat[-1] - flat[-2]) > 1e-4 * np.abs(flat[-1])
      np.testing.assert_allclose(q.keypoints[clear], p.keypoints[clear], rtol=0, atol=0.05)
      compared += int(clear.sum())
      skipped += int((~clear).sum())
  assert compared > 0 and skipped <= 0.05 * (compared + skipped), (compared, skipped)


def test_what_a_kind_cannot_export_or_run_is_a_clear_error():
  recipe = config_lib.load_recipe(os.path.join(REPO, 'configs', 'demo_bottom_up.py'))
  task = tasks.get_task(recipe)
  with pytest.raises(errors.UserError, match="export head 'decoded'.*exports network"):
    task.exportable({}, head='decoded')
  with pytest.raises(errors.UserError, match="backend 'onnxruntime' is not available"):
    task.predictor({}, backend='onnxruntime')
  with pytest.raises(errors.UserError, match="backend 'tensorrt': expected one of jax"):
    task.predictor({}, backend='tensorrt')
