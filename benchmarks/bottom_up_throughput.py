r"""Bottom-up inference images/s at 512x512: network, grouping and the whole, per image.

python benchmarks/bottom_up_throughput.py --config=configs/coco_higherhrnet_w32_512.py

Each image goes through what bottom-up evaluation does: the official resize and warp (host),
the jitted network with flip test and projection to the input size (device), then the
official grouping and projection to the image (host). The images are synthetic crowds of
``--people`` people at ``--size`` x ``--size``; the weights are random, so the network's maps
are not a trained model's. Grouping is therefore also timed on ground-truth maps of the same
images (Gaussians at the true joints, one tag per person), what a trained model gives.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags
import jax
import numpy as np
from ml_collections import config_flags

# benchmarks/input_pipeline.py would shadow the input_pipeline package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _HERE]

from hrnet_jax import bottom_up, models, tasks  # noqa: E402
from input_pipeline import bottom_up_targets, synthetic  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/coco_higherhrnet_w32_512.py',
                                          'Bottom-up recipe config.', lock_config=False)
_SIZE = flags.DEFINE_integer('size', 512, 'Image height and width.')
_IMAGES = flags.DEFINE_integer('images', 5, 'Timed images after the warm-up image.')
_PEOPLE = flags.DEFINE_integer('people', 6, 'Most people per synthetic image.')


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


def main(argv):
  del argv
  config = _CONFIG.value
  if not isinstance(tasks.get_task(config), tasks.BottomUpTask):
    raise app.UsageError(f'{_CONFIG.value.model.name} is not a bottom-up model')
  model = models.create_model(config.model)
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
