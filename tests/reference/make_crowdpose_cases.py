r"""Makes tests/fixtures/crowdpose_cases.json: the official crowdpose-api on the real sample.

Not run by the tests: it documents how that fixture was made. It runs the official CrowdPose
evaluation tool itself, github.com/Jeff-sjtu/CrowdPose at commit
86fe5e11e570cad02d553db52ec72545578cd1c8 ("fix cocoeval", 2021-10-24, the newest), folder
``crowdpose-api/PythonAPI/crowdposetools/``, on
``tests/fixtures/real_data/crowdpose/test_crowdpose.json`` with several result sets, and saves
the results and the tool's ``stats`` and printed table of each.

Run it from the repository root with a clone (or bare mirror) of that repository:

    git clone https://github.com/Jeff-sjtu/CrowdPose /tmp/CrowdPose
    python tests/reference/make_crowdpose_cases.py /tmp/CrowdPose

or with a folder holding that commit's ``crowdposetools/*.py`` (their git blob ids are checked):

    python tests/reference/make_crowdpose_cases.py /path/to/crowdposetools

The tool's ``__init__.py``, ``coco.py``, ``cocoeval.py`` and ``mask.py`` are copied unchanged
(from a git repository: ``git show 86fe5e1:crowdpose-api/PythonAPI/crowdposetools/<file>``) into
a temporary ``crowdposetools`` package and imported from there. None of its code is edited;
only what its 2021 environment had and today's lacks is supplied:

* its cython ``_mask`` (not built) is pycocotools' (``sys.modules['crowdposetools._mask']``);
  keypoint evaluation uses no mask function;
* ``np.float``, removed in numpy 1.24 and used by its ``accumulate``, is set back to ``float``
  (what it was);
* ``matplotlib``, imported by its ``coco.py`` and used by nothing run here, is stubbed when it
  is not installed.

The tool reads its ground truth from a file (``COCOeval.get_type_result`` opens it again for
the crowdIndex split) and its results from a file too (its ``loadRes`` of a list fails under
Python 3 on ``unicode``), so both are written to a temporary folder. Needs numpy and
pycocotools only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import types

import numpy as np

import tool_files

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, '..', 'fixtures')
GROUND_TRUTH = 'real_data/crowdpose/test_crowdpose.json'
DETECTIONS = os.path.join(FIXTURES, 'real_data/crowdpose/test_crowdpose_det_AP_40.json')
OUTPUT = os.path.normpath(os.path.join(FIXTURES, 'crowdpose_cases.json'))

REPOSITORY = 'github.com/Jeff-sjtu/CrowdPose'
COMMIT = '86fe5e11e570cad02d553db52ec72545578cd1c8'
TOOL_PATH = 'crowdpose-api/PythonAPI/crowdposetools'
BLOBS = {  # git blob ids of the files at COMMIT
    '__init__.py': '3f7d85bba884ea8f83fc6ab2a1e6ade80d98d4d9',
    'coco.py': 'a13f4231faef9f3602ce5dda797efe3c4065d9ab',
    'cocoeval.py': '621f7b1c915d48d019e8176bf05c2758f15d0650',
    'mask.py': '6200854277df169853ae10170b698ff3212b6f18',
}
# The tool's COCOeval.stats entries of hrnet_jax.crowdpose.METRIC_NAMES.
STAT_INDEX = {'AP': 0, 'AP50': 1, 'AP75': 2, 'AR': 5, 'AR50': 6, 'AR75': 7, 'AP_easy': 8,
              'AP_medium': 9, 'AP_hard': 10}

# A standing person in a unit box (x right, y down), CrowdPose joint order: the crude pose put
# in each detected box.
TEMPLATE = ((.65, .22), (.35, .22), (.75, .38), (.25, .38), (.78, .52), (.22, .52), (.6, .55),
            (.4, .55), (.6, .75), (.4, .75), (.6, .95), (.4, .95), (.5, .05), (.5, .15))


def read_tool(source: str) -> dict[str, bytes]:
  """The tool's python files at COMMIT, from a git repository or a folder of them."""
  return tool_files.read_tool(source, repository=REPOSITORY, commit=COMMIT,
                              tool_path=TOOL_PATH, blobs=BLOBS)


def import_tool(files: dict[str, bytes], folder: str):
  """Copies the files into ``folder/crowdposetools`` and imports its COCO and COCOeval."""
  tool_files.write_package(files, folder, 'crowdposetools')
  import pycocotools._mask
  sys.modules['crowdposetools._mask'] = pycocotools._mask
  if not hasattr(np, 'float'):
    np.float = float
  try:
    import matplotlib.pyplot  # noqa: F401
  except ImportError:
    for name in ('matplotlib', 'matplotlib.pyplot', 'matplotlib.collections',
                 'matplotlib.patches'):
      sys.modules[name] = types.ModuleType(name)
    sys.modules['matplotlib'].pyplot = sys.modules['matplotlib.pyplot']
    sys.modules['matplotlib.collections'].PatchCollection = None
    sys.modules['matplotlib.patches'].Polygon = None
  from crowdposetools.coco import COCO
  from crowdposetools.cocoeval import COCOeval
  return COCO, COCOeval


def variant(ground_truth: dict, case: dict) -> dict:
  """The ground truth of a case: its ``crowd_index`` per image and ``gt_area`` applied.

  The tests apply the same changes.
  """
  crowd_index = {int(k): v for k, v in case.get('crowd_index', {}).items()}
  images = [dict(image, crowdIndex=crowd_index.get(image['id'], image['crowdIndex']))
            for image in ground_truth['images']]
  annotations = [dict(a, area=case['gt_area']) if 'gt_area' in case else a
                 for a in ground_truth['annotations']]
  return dict(ground_truth, images=images, annotations=annotations)


def run_tool(COCO, COCOeval, ground_truth: dict, results: list[dict], folder: str):
  """The tool's demo.py on these files: its 11 stats and the ' Average' lines it prints."""
  gt_path, results_path = os.path.join(folder, 'gt.json'), os.path.join(folder, 'results.json')
  with open(gt_path, 'w') as f:
    json.dump(ground_truth, f)
  with open(results_path, 'w') as f:
    json.dump(results, f)
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    coco_gt = COCO(gt_path)
    coco_dt = coco_gt.loadRes(results_path)
    coco_eval = COCOeval(coco_gt, coco_dt, 'keypoints')
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
  table = '\n'.join(line for line in printed.getvalue().splitlines()
                    if line.startswith(' Average'))
  return [float(s) for s in coco_eval.stats], table


def person(image_id: int, keypoints, score: float) -> dict:
  """A COCO keypoint result, coordinates rounded to 0.1 and the score to 1e-4."""
  return {'image_id': image_id, 'category_id': 1,
          'keypoints': [round(float(v), 1) for v in np.asarray(keypoints).reshape(-1)],
          'score': round(float(score), 4)}


def noisy(people: list[dict], rng, pixels: float, scores=None) -> list[dict]:
  """The people's keypoints moved by Gaussian noise of ``pixels``, random scores."""
  out = []
  for i, p in enumerate(people):
    k = np.asarray(p['keypoints'], np.float64).reshape(-1, 3)
    k[:, :2] += rng.normal(0, pixels, k[:, :2].shape)
    k[:, 2] = 1
    out.append(person(p['image_id'], k, rng.uniform(0.05, 1) if scores is None else scores[i]))
  return out


def false_people(images: list[dict], rng, count: int, image_id: int | None = None):
  """``count`` random poses (the template in a random box) in random or given images."""
  out = []
  for _ in range(count):
    image = images[rng.integers(len(images))] if image_id is None else next(
        i for i in images if i['id'] == image_id)
    w, h = rng.uniform(40, 200), rng.uniform(80, 300)
    x, y = rng.uniform(0, image['width'] - w), rng.uniform(0, image['height'] - h)
    k = np.concatenate([np.array(TEMPLATE) * (w, h) + (x, y), np.ones((14, 1))], 1)
    k[:, :2] += rng.normal(0, 3, (14, 2))
    out.append(person(image['id'], k, rng.uniform(0.05, 1)))
  return out


def box_poses(detections: list[dict], image_ids: set) -> list[dict]:
  """The template pose in each detected box, with the box's score."""
  out = []
  for d in detections:
    if d['image_id'] in image_ids:
      x, y, w, h = d['bbox']
      k = np.concatenate([np.array(TEMPLATE) * (w, h) + (x, y), np.ones((14, 1))], 1)
      out.append(person(d['image_id'], k, d['score']))
  return out


def make_cases(ground_truth: dict, detections_file: str) -> list[dict]:
  """The result sets (and ground-truth changes) of the cases."""
  rng = np.random.default_rng(2026)
  people = [a for a in ground_truth['annotations'] if a['num_keypoints'] > 0]
  images = ground_truth['images']
  oracle = [{'image_id': p['image_id'], 'category_id': 1, 'keypoints': p['keypoints'],
             'score': 1.0} for p in people]
  with open(detections_file) as f:
    detections = json.load(f)
  cases = [
      {'name': 'oracle', 'results': oracle},
      {'name': 'oracle_easy_hard', 'results': oracle,
       'crowd_index': {'106848': 0.1, '103319': 0.9}},
      {'name': 'noise_3px', 'results': noisy(people, rng, 3)},
      {'name': 'noise_6px', 'results': noisy(people, rng, 6)},
      {'name': 'noise_15px', 'results': noisy(people, rng, 15)},
      {'name': 'tied_scores', 'results': noisy(people, rng, 5, [0.5] * len(people))},
      {'name': 'dropped', 'results': noisy(people, rng, 4)[1:3]},  # one person per image
      {'name': 'extra_false', 'results': noisy(people, rng, 4) + false_people(images, rng, 4)},
      {'name': 'more_than_20', 'results': noisy(people, rng, 4) +
       false_people(images, rng, 22, image_id=106848)},
      {'name': 'detections', 'results': box_poses(detections, {i['id'] for i in images})},
      {'name': 'boundaries_medium_hard', 'results': noisy(people, rng, 4),
       'crowd_index': {'106848': 0.2, '103319': 0.8}},
      {'name': 'easy_hard', 'results': noisy(people, rng, 4) + false_people(images, rng, 3),
       'crowd_index': {'106848': 0.05, '103319': 0.95}},
      {'name': 'gt_area_ignored', 'results': noisy(people, rng, 4), 'gt_area': 1.0},
  ]
  return cases


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('source', help='a clone of Jeff-sjtu/CrowdPose or a crowdposetools folder')
  parser.add_argument('--detections', default=DETECTIONS,
                      help='test_crowdpose_det_AP_40.json of the real CrowdPose sample (mmpose)')
  args = parser.parse_args()
  with open(os.path.join(FIXTURES, GROUND_TRUTH)) as f:
    ground_truth = json.load(f)
  with tempfile.TemporaryDirectory() as folder:
    COCO, COCOeval = import_tool(read_tool(args.source), folder)
    cases = make_cases(ground_truth, args.detections)
    for case in cases:
      case['stats'], case['table'] = run_tool(COCO, COCOeval, variant(ground_truth, case),
                                              case['results'], folder)
      print(f"{case['name']:>24}: " + ' '.join(
          f'{k}={case["stats"][i]:.4f}' for k, i in STAT_INDEX.items()))
  header = {'tool': f'{REPOSITORY} {TOOL_PATH} @ {COMMIT}',
            'made_by': 'tests/reference/make_crowdpose_cases.py', 'ground_truth': GROUND_TRUTH,
            'stat_index': STAT_INDEX}
  text = json.dumps(header)[:-1] + ', "cases": [\n' + ',\n'.join(
      json.dumps(case) for case in cases) + '\n]}\n'
  with open(OUTPUT, 'w') as f:
    f.write(text)
  print(f'wrote {OUTPUT} ({len(text)} bytes)')


if __name__ == '__main__':
  main()
