r"""Bottom-up inference images/s: per-image stages (``--mode=stages``), or the evaluation.

python benchmarks/bottom_up_throughput.py --config=configs/coco_higherhrnet_w32_512.py

``--mode=stages`` (the default) times each image through the one-image path: the official
resize and warp (host, TF), the jitted network with flip test and projection to the input size
(device), then the official grouping and projection to the image (host). The images are
synthetic crowds of ``--people`` people at ``--size`` x ``--size``; the weights are random, so
the network's maps are not a trained model's. Grouping is therefore also timed on ground-truth
maps of the same images (Gaussians at the true joints, one tag per person), what a trained model
gives.

``--mode=eval`` times bottom-up evaluation of a val folder of ``--images`` synthetic crowds in
COCO's commonest shapes (``VAL_SHAPES``), old and new path in the same run, and checks that
their COCO results are identical:

- old: one image at a time, read, warped on the host (TF), network on one device, grouped (the
  evaluation before it ran on every device);
- new: ``BottomUpVal.predict``, images of one input size batched over all local devices, warp
  and network there, grouping on the host while the devices run the next batch.

XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/bottom_up_throughput.py \
    --mode=eval --config=configs/demo_bottom_up.py --config.test.flip_test=True \
    --images=64 --repeats=3

Each path runs once to compile every input size, then ``--repeats`` times, alternating; the
median images/s of each is reported.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

from absl import app, flags
import cv2
import jax
import numpy as np
from ml_collections import config_flags

# benchmarks/input_pipeline.py would shadow the input_pipeline package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _HERE]

from hrnet_jax import bottom_up, models, sharding, tasks  # noqa: E402
from input_pipeline import bottom_up_targets, coco, synthetic  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/coco_higherhrnet_w32_512.py',
                                          'Bottom-up recipe config.', lock_config=False)
_SIZE = flags.DEFINE_integer('size', 512, 'Image height and width.')
_IMAGES = flags.DEFINE_integer('images', 5, 'Timed images after a warm-up image (stages); val '
                                      'images (eval).')
_PEOPLE = flags.DEFINE_integer('people', 6, 'Most people per synthetic image.')
_MODE = flags.DEFINE_enum('mode', 'stages', ['stages', 'eval'],
                          'Per-image stages, or the evaluation by the old and new path.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed evaluations of each path (--mode=eval).')


def ground_truth_maps(annotations, size, center, scale, sigma):
  """Official-target heatmaps and one tag per person at the network input."""
  w, h = size
  joints = np.array([a['keypoints'] for a in annotations], np.float64).reshape(-1, 17, 3)
  joints[..., :2] = (joints[..., :2] - center) * (w / (scale[0] * 200)) + np.array([w, h]) / 2
  det = bottom_up_targets.multi_person_heatmaps(joints, h, w, sigma)
  tags = np.zeros((h, w, 17, 2), np.float32)
  for p, person in enumerate(joints):
    near = bottom_up_targets.multi_person_heatmaps(person[None], h, w, sigma) > 0.01
    tags[near] = 3.0 * (p + 1)
  return det, tags


def old_evaluation(config, variables, source, grouping_inputs_fn):
  """COCO results of the val split one image at a time, as the evaluation was before."""
  results = []
  for path, image_id in zip(source.paths, source.image_ids):
    image = tasks.read_rgb(path)
    x, center, scale = bottom_up.network_input(image, config.dataset.input_size)
    det, nms_det, tags = grouping_inputs_fn(variables, x[None], x.shape[:2])
    keypoints, scores = bottom_up.group_people(det, tags, center, scale, config.test, nms_det)
    cap = config.test.max_num_people
    results += bottom_up.results_for_image(image_id, keypoints[:cap], scores[:cap])
  return results


# (height, width) of the val images and their shares: COCO's commonest shapes at half size
# (640x480, 480x640, 640x427), so a few input sizes hold most images, as in COCO val.
VAL_SHAPES = (((240, 320), 0.55), ((320, 240), 0.25), ((213, 320), 0.2))


def write_val_folder(root, count, max_people):
  """A COCO-format val split of synthetic crowds (JPEG) in ``VAL_SHAPES``; no annotations."""
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(root, 'val'))
  entries = []
  for i in range(count):
    height, width = VAL_SHAPES[rng.choice(len(VAL_SHAPES), p=[p for _, p in VAL_SHAPES])][0]
    image, _ = synthetic.make_image(rng, i, (192, 320), max_people)
    name = f'{i + 1:012d}.jpg'
    cv2.imwrite(os.path.join(root, 'val', name), cv2.resize(image, (width, height)))
    entries.append({'id': i + 1, 'file_name': name, 'height': height, 'width': width})
  coco.write_json(coco.annotation_path(root, 'val'),
                  {'images': entries, 'annotations': [], 'categories': synthetic.categories()})


def compare_evaluations(config, variables):
  """Old and new bottom-up evaluation of a synthetic val folder: images/s and equality."""
  if tuple(config.test.scale_factors) != (1.0,):
    raise app.UsageError('--mode=eval times the single-scale test (the old path of this script)')
  with tempfile.TemporaryDirectory() as root:
    write_val_folder(root, _IMAGES.value, _PEOPLE.value)
    config.dataset.source, config.dataset.root, config.dataset.val_split = 'folder', root, 'val'
    source = tasks.get_task(config).val_source(sharding.data_mesh())
    grouping_inputs_fn = bottom_up.make_grouping_inputs_fn(config)
    variables = jax.device_put(variables, jax.devices()[0])
    paths = {'old': lambda: old_evaluation(config, variables, source, grouping_inputs_fn),
             'new': lambda: source.predict_split(variables).results}
    rates, results = {'old': [], 'new': []}, {}
    for repeat in range(_REPEATS.value + 1):  # the first pass compiles and is not kept
      for name, run in paths.items():
        start = time.perf_counter()
        results[name] = run()
        if repeat:
          rates[name].append(_IMAGES.value / (time.perf_counter() - start))
    shapes = [tuple(i[k] for k in ('height', 'width'))
              for i in source.ground_truth['images']]
  sizes = {bottom_up.input_plan(*shape, config).key for shape in shapes}
  print(f'{jax.devices()[0].platform} backend, {jax.device_count()} device(s); '
        f'{config.model.name} W{config.model.width}, input {config.dataset.input_size}, '
        f'flip test {config.test.flip_test}; {_IMAGES.value} images of {len(sizes)} input sizes, '
        f'{len(results["new"])} people')
  for name, values in rates.items():
    print(f'{name}: median {statistics.median(values):7.2f} images/s  (runs: ' +
          ', '.join(f'{v:.2f}' for v in values) + ')')
  print(f'speed-up {statistics.median(rates["new"]) / statistics.median(rates["old"]):.2f}x; '
        f'COCO results identical: {results["new"] == results["old"]}')


def main(argv):
  del argv
  config = _CONFIG.value
  if not isinstance(tasks.get_task(config), tasks.BottomUpTask):
    raise app.UsageError(f'{_CONFIG.value.model.name} is not a bottom-up model')
  model = models.create_model(config.model)
  if _MODE.value == 'eval':
    variables = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))
    compare_evaluations(config, variables)
    return
  input_size = config.dataset.input_size
  variables = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))
  grouping_inputs_fn = bottom_up.make_grouping_inputs_fn(config)
  rng = np.random.default_rng(0)
  images = [synthetic.make_image(rng, i, (_SIZE.value, _SIZE.value), _PEOPLE.value)
            for i in range(_IMAGES.value + 1)]
  times = {'input': [], 'network + NMS': [], 'grouping': [], 'true maps, host NMS': [],
           'whole': []}
  people = []
  for i, (image_bgr, labelled) in enumerate(images):
    image = image_bgr[:, :, ::-1]
    start = time.perf_counter()
    network_input, center, scale = bottom_up.network_input(image, input_size)
    t_input = time.perf_counter()
    det, nms_det, tags = (np.asarray(x) for x in grouping_inputs_fn(
        variables, network_input[None], network_input.shape[:2]))
    t_network = time.perf_counter()
    keypoints, _ = bottom_up.group_people(det, tags, center, scale, config.test, nms_det)
    t_grouping = time.perf_counter()
    true_det, true_tags = ground_truth_maps(labelled, network_input.shape[1::-1], center,
                                            scale, config.dataset.sigma)
    t_true = time.perf_counter()
    found, _ = bottom_up.group_people(true_det.transpose(2, 0, 1),
                                      true_tags.transpose(2, 0, 1, 3), center, scale, config.test)
    t_true_grouping = time.perf_counter()
    if i == 0:
      print(f'warm-up image (compiles the network): {t_grouping - start:.1f} s')
      continue
    times['input'].append(t_input - start)
    times['network + NMS'].append(t_network - t_input)
    times['grouping'].append(t_grouping - t_network)
    times['true maps, host NMS'].append(t_true_grouping - t_true)
    times['whole'].append(t_grouping - start)
    people.append((len(keypoints), len(found), len(labelled)))
  print(f'{jax.devices()[0].platform} backend, {jax.device_count()} device(s); '
        f'{config.model.name} W{config.model.width}, input {input_size}, images '
        f'{_SIZE.value}x{_SIZE.value}, flip test {config.test.flip_test}')
  for name, values in times.items():
    mean = float(np.mean(values))
    print(f'{name:>22}: {mean * 1e3:9.1f} ms/image = {1 / mean:7.2f} images/s')
  share = np.mean(times['grouping']) / np.mean(times['whole'])
  print(f'grouping share of the whole: {100 * share:.1f}%')
  print('people found on network maps / on true maps / labelled: ' +
        ', '.join(f'{a}/{b}/{c}' for a, b, c in people))


if __name__ == '__main__':
  app.run(main)
