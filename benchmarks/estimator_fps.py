r"""Frames per second of ``PoseEstimator.video`` on this machine, detector excluded and included.

python benchmarks/estimator_fps.py [--config=configs/coco_w32.py] [--model=NAME_OR_PATH] \
    [--frames=24] [--detector=boxes|hog|none|FILE.onnx]

The frames are the four real COCO photos of tests/fixtures/real_data/coco (640 x 425 ..
640 x 480), cycled; a top-down model's people are those the photos have: with
``--detector=boxes`` their real person detections (test_coco_det_AP_H_56.json, score >= 0.5:
1 to 6 per photo, the detector's time excluded), with ``hog`` OpenCV's HOG detector run on
each frame (included). Without --model the recipe's network gets random weights (the speed
does not depend on them). One pass over all frames compiles; the next is timed. Prints the
rate, people per frame and a ``RESULT {json}`` line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from absl import app, flags
import cv2
import jax
import numpy as np
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Not this folder: its input_pipeline.py would hide the package of that name.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != os.path.join(REPO, 'benchmarks')]
sys.path.insert(0, os.path.join(REPO, 'tests'))
from conftest import random_variables  # noqa: E402  (the tests' fast random init)

from hrnet_jax import PoseEstimator, checkpoints, detectors  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/coco_w32.py', 'Recipe config.',
                                          lock_config=False)
_MODEL = flags.DEFINE_string('model', None, 'A zoo name, run or converted folder, or .pth '
                             '(default: random weights for --config).')
_FRAMES = flags.DEFINE_integer('frames', 24, 'Frames timed (the photos cycled).')
_DETECTOR = flags.DEFINE_string('detector', 'boxes', "'boxes' (the photos' detections, "
                                "detector excluded), 'hog', 'none' or a .onnx file.")

COCO = os.path.join(REPO, 'tests', 'fixtures', 'real_data', 'coco')


def main(argv: list[str]) -> None:
  del argv
  config = _CONFIG.value
  model = _MODEL.value
  if model is None:
    model = os.path.join(tempfile.mkdtemp(), 'random')
    checkpoints.save_variables(model, random_variables(config.model), config=config)
  estimator = PoseEstimator(model, config=_CONFIG.value if _MODEL.value else None,
                            detector=None if _DETECTOR.value == 'boxes' else _DETECTOR.value)
  names = sorted(n for n in os.listdir(COCO) if n.endswith('.jpg'))
  photos = [cv2.imread(os.path.join(COCO, n)) for n in names]
  boxes_of = None
  if _DETECTOR.value == 'boxes' and estimator.takes_boxes:
    found = detectors.DetectionsFile(os.path.join(COCO, 'test_coco_det_AP_H_56.json'))
    listed = [found.for_image(int(n[:-4])) for n in names]
    boxes_of = lambda frame: listed[frame.index % len(photos)]  # noqa: E731
  frames = [photos[i % len(photos)] for i in range(_FRAMES.value)]

  def run() -> tuple[float, int]:
    start, people = time.perf_counter(), 0
    for _, found in estimator.video(frames, bgr=True, boxes_of=boxes_of):
      people += len(found)
    return time.perf_counter() - start, people

  run()  # compiles every shape the timed pass meets
  elapsed, people = run()
  fps = len(frames) / elapsed
  result = {'model': estimator.description if _MODEL.value else 'random weights',
            'input': f'{config.dataset.get("image_size", config.dataset.get("input_size"))}',
            'detector': _DETECTOR.value, 'frames': len(frames), 'seconds': round(elapsed, 2),
            'frames_per_second': round(fps, 2), 'people_per_frame': round(people / len(frames), 2),
            'device': f'{jax.device_count()} {jax.devices()[0].platform}'}
  print(f'{fps:.2f} frames/s ({people / len(frames):.2f} people per frame, '
        f'detector {_DETECTOR.value}) on {result["device"]}')
  print('RESULT ' + json.dumps(result))


if __name__ == '__main__':
  app.run(main)
