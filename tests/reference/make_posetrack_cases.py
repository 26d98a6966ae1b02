r"""Makes tests/fixtures/posetrack_cases.json: poseval's PoseTrack18 AP on the real sample.

Not run by the tests: it documents how that fixture was made. It runs the PoseTrack evaluation
tool itself, github.com/leonid-pishchulin/poseval at commit
4258a1575b9f2ddd0bdb85f74557235ab5df0f52 (2020-10-01, the newest: the Python 3 package
``poseval/``; its AP code is the old ``py/`` one's at 604f93d but for print and import syntax),
on the per-video files ``tests/fixtures/real_data/posetrack18/annotations/val/*.json`` with
several prediction sets, and saves the predictions and the tool's per-joint AP (``apAll``), the
groups and the table it prints (``printTable``) of each.

Run it from the repository root with a clone (or bare mirror) of that repository, and shapely
and tqdm where Python finds them (``--deps``: a folder to put on ``sys.path``; click and numpy are
installed):

    git clone https://github.com/leonid-pishchulin/poseval /tmp/poseval
    pip install --no-deps --target /tmp/poseval_deps shapely tqdm
    python tests/reference/make_posetrack_cases.py /tmp/poseval --deps /tmp/poseval_deps

or with a folder holding that commit's ``poseval/*.py`` (their git blob ids are checked).

The tool's ``__init__.py``, ``convert.py``, ``eval_helpers.py``, ``evaluateAP.py`` and
``posetrack18_id2fname.py`` are copied unchanged into a temporary ``poseval`` package and
imported from there; ``evaluate.py`` (its command line) is not imported, as it imports the
tracking part and with it motmetrics: the AP lines of its ``main`` are run as they are
(``load_data_dir``, ``evaluateAP``, ``printTable``). Nothing of the AP path is stubbed. One
thing is pinned: ``load_data_dir`` lists the ground-truth folder with ``glob.glob``, in the
file system's order, which decides the order of equal scores; the module's ``glob`` is given
a sorted ``glob``, the order ``hrnet_jax.posetrack`` uses. tqdm, used only by convert.py's
command line, is stubbed if it is not installed.

The predictions are COCO keypoint results (``image_id``, ``category_id``, ``keypoints`` with a
score as third value, ``score``); they go to the tool as the PoseTrack18 files mmpose's
PoseTrack18 evaluation writes: one file per video named as its ground-truth file, the video's
``images`` in the same order, the ground truth's ``categories``, and per person ``keypoints``
as given, ``scores`` the third values, ``score`` and a per-frame ``track_id``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
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
ANNOTATIONS = os.path.join(FIXTURES, 'real_data', 'posetrack18', 'annotations')
OUTPUT = os.path.join(FIXTURES, 'posetrack_cases.json')

REPOSITORY = 'github.com/leonid-pishchulin/poseval'
COMMIT = '4258a1575b9f2ddd0bdb85f74557235ab5df0f52'
BLOBS = {  # git blob ids of the files at COMMIT
    '__init__.py': 'e69de29bb2d1d6434b8b29ae775ad8c2e48c5391',
    'convert.py': '8249efb240d39bf33b85603259663653c1cd3137',
    'eval_helpers.py': '2d52e6f344652dc11ad5b573b4ef4b76ca58707f',
    'evaluateAP.py': '0436e346e86165d38ebc0b9b57dc34d55ce60a41',
    'posetrack18_id2fname.py': '65d9736f0a481152e8cef4bf2cb21d6624861f27',
}
GROUP_NAMES = ('Head', 'Shoulder', 'Elbow', 'Wrist', 'Hip', 'Knee', 'Ankle', 'Total')
EARS = (3, 4)  # PoseTrack18 joints poseval drops


def read_tool(source: str) -> dict[str, bytes]:
  """The tool's python files at COMMIT, from a git repository or a folder of them."""
  return tool_files.read_tool(source, repository=REPOSITORY, commit=COMMIT,
                              tool_path='poseval', blobs=BLOBS)


def import_tool(files: dict[str, bytes], folder: str):
  """Copies the files into ``folder/poseval`` and imports its eval_helpers and evaluateAP."""
  tool_files.write_package(files, folder, 'poseval')
  try:
    import tqdm  # noqa: F401
  except ImportError:
    sys.modules['tqdm'] = types.ModuleType('tqdm')
    sys.modules['tqdm'].tqdm = lambda x, *a, **k: x
  from poseval import eval_helpers, evaluateAP
  eval_helpers.glob = types.SimpleNamespace(glob=lambda pattern: sorted(glob.glob(pattern)))
  return eval_helpers, evaluateAP


def prediction_file(gt: dict, results: list[dict]) -> dict:
  """A video's predictions as mmpose writes them for poseval."""
  ids = [image['id'] for image in gt['images']]
  annotations = []
  for image_id in ids:
    for track_id, r in enumerate(x for x in results if x['image_id'] == image_id):
      kp = np.asarray(r['keypoints'], np.float64).reshape(-1, 3)
      annotations.append({'image_id': image_id, 'category_id': 1, 'keypoints': r['keypoints'],
                          'scores': kp[:, 2].tolist(), 'score': r['score'],
                          'track_id': r.get('track_id', track_id)})
  return {'images': [{'id': i['id'], 'file_name': i['file_name']} for i in gt['images']],
          'categories': gt['categories'], 'annotations': annotations}


def run_tool(eval_helpers, evaluateAP, gt_files: list[str], results: list[dict],
             folder: str) -> dict:
  """evaluate.py's AP lines on folders of these ground-truth files and the predictions."""
  gt_dir, pr_dir = os.path.join(folder, 'gt') + '/', os.path.join(folder, 'pred') + '/'
  for d in (gt_dir, pr_dir):
    os.makedirs(d)
  for path in gt_files:
    with open(path) as f:
      gt = json.load(f)
    name = os.path.basename(path)
    with open(gt_dir + name, 'w') as f:
      json.dump(gt, f)
    with open(pr_dir + name, 'w') as f:
      json.dump(prediction_file(gt, results), f)
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    gt_frames, pr_frames = eval_helpers.load_data_dir(['', gt_dir, pr_dir])
    ap, _, _ = evaluateAP.evaluateAP(gt_frames, pr_frames, folder, False, False)
  table = io.StringIO()
  with contextlib.redirect_stdout(table):
    eval_helpers.printTable(ap)
  cum = eval_helpers.getCum(ap)
  nan_to_none = lambda v: None if np.isnan(v) else float(v)
  return {'joint_ap': [nan_to_none(v) for v in ap[:, 0]],
          'metrics': {k: nan_to_none(v) for k, v in zip(GROUP_NAMES, cum)},
          'table': table.getvalue()}


def people(gt_files: list[str]) -> list[tuple[dict, dict]]:
  """(image, annotation) of every ground-truth person, in file order."""
  found = []
  for path in gt_files:
    with open(path) as f:
      gt = json.load(f)
    images = {i['id']: i for i in gt['images']}
    found += [(images[a['image_id']], a) for a in gt['annotations']]
  return found


def head_size(annotation: dict) -> float:
  x, y, w, h = annotation['bbox_head']
  return 0.6 * float(np.hypot(w, h))


def result(image_id, kp: np.ndarray, score: float) -> dict:
  """A COCO keypoint result, rounded as stored (2 decimals for x, y; 4 for scores)."""
  kp = np.asarray(kp, np.float64).copy()
  kp[:, :2] = np.round(kp[:, :2], 2)
  kp[:, 2] = np.round(kp[:, 2], 4)
  kp[kp == 0] = 0.0  # no -0.0
  return {'image_id': image_id, 'category_id': 1,
          'keypoints': [float(v) for v in kp.reshape(-1)], 'score': round(float(score), 4)}


def noisy(rng, image: dict, ann: dict, sigma: float, extra: float = 0.3,
          shift=(0.0, 0.0)) -> dict:
  """A prediction of a person: labelled joints with Gaussian noise (sigma head sizes) and
  random scores, unlabelled ones predicted with probability ``extra`` near the person, ears
  always (poseval drops them)."""
  gt = np.asarray(ann['keypoints'], np.float64).reshape(-1, 3)
  labelled = ~np.all(gt == 0, axis=1)
  head = head_size(ann)
  center = gt[labelled, :2].mean(axis=0)
  kp = np.zeros_like(gt)
  for j in range(len(gt)):
    if labelled[j]:
      kp[j, :2] = gt[j, :2] + rng.normal(0, sigma * head, 2) + np.asarray(shift) * head
    elif j in EARS or rng.random() < extra:
      kp[j, :2] = center + rng.normal(0, 2 * head, 2)
    else:
      continue
    kp[j, 2] = rng.uniform(0.05, 1.0)
  return result(image['id'], kp, rng.uniform(0.2, 1.0))


def oracle(image: dict, ann: dict) -> dict:
  """The ground truth as a prediction: labelled joints with score 1, the rest (0, 0, 0)."""
  gt = np.asarray(ann['keypoints'], np.float64).reshape(-1, 3)
  labelled = ~np.all(gt == 0, axis=1)
  kp = np.where(labelled[:, None], np.concatenate([gt[:, :2], np.ones((len(gt), 1))], 1), 0)
  return result(image['id'], kp, 1.0)


def inside_region(rng, shapely, image: dict, region: int, count: int) -> np.ndarray:
  """``count`` random points strictly inside one of an image's ignore regions."""
  xs, ys = image['ignore_regions_x'][region], image['ignore_regions_y'][region]
  polygon = shapely.geometry.Polygon(list(zip(xs, ys)))
  points = []
  while len(points) < count:
    p = rng.uniform([min(xs), min(ys)], [max(xs), max(ys)])
    if polygon.contains(shapely.geometry.Point(*p)):
      points.append(np.round(p, 2))
  return np.array(points)


def check_point_in_polygon(shapely, gt_files: list[str], rng) -> int:
  """hrnet_jax.posetrack's point-in-polygon equals shapely's ``contains`` on the real regions:
  random points, the vertices and points on the edges. Returns the number of points checked."""
  sys.path.insert(0, os.path.join(HERE, '..', '..'))
  from hrnet_jax import posetrack
  checked = 0
  for path in gt_files:
    with open(path) as f:
      gt = json.load(f)
    for image in gt['images']:
      for xs, ys in zip(image.get('ignore_regions_x', []), image.get('ignore_regions_y', [])):
        ring = np.column_stack([xs, ys]).astype(np.float64)
        polygon = shapely.geometry.Polygon(ring)
        lo, hi = ring.min(0) - 5, ring.max(0) + 5
        t = rng.uniform(0, 1, (len(ring), 1))
        edges = ring + t * (np.roll(ring, -1, axis=0) - ring)
        points = np.concatenate([rng.uniform(lo, hi, (3000, 2)), np.round(rng.uniform(
            lo, hi, (1000, 2))), ring, edges, (ring + np.roll(ring, -1, axis=0)) / 2])
        ours = posetrack._inside(points, ring)
        theirs = np.array([polygon.contains(shapely.geometry.Point(*p)) for p in points])
        if not np.array_equal(ours, theirs):
          sys.exit(f'point in polygon differs from shapely at {points[ours != theirs][:5]}')
        checked += len(points)
  return checked


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('poseval', help='a clone or bare mirror of poseval, or a folder of its '
                      'poseval/*.py')
  parser.add_argument('--deps', help='a folder with shapely (and tqdm) to put on sys.path')
  args = parser.parse_args()
  if args.deps:
    sys.path.insert(0, args.deps)
  import shapely.geometry
  rng = np.random.default_rng(2018)
  val = sorted(glob.glob(os.path.join(ANNOTATIONS, 'val', '*.json')))
  one = [os.path.join(ANNOTATIONS, 'val', '003418_mpii_test.json')]
  print('point in polygon checked on', check_point_in_polygon(shapely, val, rng), 'points')
  everyone, alone = people(val), people(one)

  cases = []

  def case(name, gt_files, results, note):
    cases.append({'name': name, 'note': note,
                  'ground_truth': os.path.relpath(gt_files[0] if len(gt_files) == 1 else
                                                  os.path.dirname(gt_files[0]), ANNOTATIONS),
                  'results': results})

  case('oracle', val, [oracle(i, a) for i, a in everyone],
       'the ground truth as predictions, score 1')
  case('noisy', val, [noisy(rng, i, a, 0.25) for i, a in everyone],
       'Gaussian noise of 0.25 head sizes, random joint scores, random extra joints and ears')
  case('dropped', val, [noisy(rng, i, a, 0.2) for n, (i, a) in enumerate(everyone)
                        if n % 3 != 1 and a['image_id'] != 10034180000],
       'noisy with a third of the people and all of video 003418 left out')
  extra = [noisy(rng, i, a, 0.25) for i, a in everyone]
  for n, (i, a) in enumerate(everyone):
    if n % 2 == 0:  # a shifted copy competing for the same person
      extra.append(noisy(rng, i, a, 0.25, shift=rng.uniform(-0.6, 0.6, 2)))
    if n % 3 == 0:  # a false person far away
      extra.append(noisy(rng, i, a, 0.25, shift=rng.uniform(4, 8, 2) * rng.choice([-1, 1], 2)))
  extra = [extra[k] for k in rng.permutation(len(extra))]
  case('extra_people', val, extra,
       'noisy plus shifted copies of half the people and false people far away, shuffled')
  ignored = [noisy(rng, i, a, 0.2) for i, a in everyone]
  for n, (i, a) in enumerate(everyone[:3]):
    image = i
    kp = np.asarray(ignored[n]['keypoints']).reshape(-1, 3).copy()
    region = int(np.argmax([len(x) for x in image['ignore_regions_x']]))
    if n == 0:  # a whole false person inside an ignore region, high scores
      pts = inside_region(rng, shapely, image, region, len(kp))
      ignored.append(result(image['id'], np.column_stack([pts, np.full(len(kp), 0.99)]), 0.99))
    else:  # part of a true person moved into an ignore region
      moved = [j for j in range(len(kp)) if kp[j, 2] > 0][::2]
      kp[moved, :2] = inside_region(rng, shapely, image, region, len(moved))
      ignored[n] = result(image['id'], kp, ignored[n]['score'])
  case('ignore_regions', val, ignored,
       'noisy plus a false person inside an ignore region, and two people with half their '
       'joints moved into one')
  case('coarse_scores', val, [dict(r, keypoints=[round(v, 1) if k % 3 == 2 else v
                                                 for k, v in enumerate(r['keypoints'])])
                              for r in cases[3]['results']],
       'extra_people with joint scores rounded to 0.1: many equal scores')
  case('one_video_oracle', one, [oracle(i, a) for i, a in alone],
       'video 003418 only (11 joints labelled): joints nobody has keep AP 0 in the Total')
  case('one_video_extra_joints', one, [noisy(rng, i, a, 0.25, extra=1.0) for i, a in alone],
       'video 003418 only, all joints predicted: joints without ground truth have AP nan')
  case('no_predictions_in_a_video', val,
       [noisy(rng, i, a, 0.3) for i, a in everyone if a['image_id'] == 10128340000],
       'predictions for video 012834 only')

  eval_helpers, evaluateAP = import_tool(read_tool(args.poseval), tempfile.mkdtemp())
  for c in cases:
    gt_path = os.path.join(ANNOTATIONS, c['ground_truth'])
    gt_files = sorted(glob.glob(os.path.join(gt_path, '*.json'))) if os.path.isdir(gt_path) \
        else [gt_path]
    c.update(run_tool(eval_helpers, evaluateAP, gt_files, c['results'], tempfile.mkdtemp()))
    print(c['name'], c['metrics'])

  # Not saved: poseval given the merged file as its one ground-truth file reads its first
  # video only (load_data_dir takes convert_videos(data)[0]).
  merged = os.path.join(ANNOTATIONS, 'test_posetrack18_val.json')
  with open(merged) as f:
    first = json.load(f)['images'][0]['file_name']
  on_merged = run_tool(eval_helpers, evaluateAP, [merged], cases[1]['results'],
                       tempfile.mkdtemp())
  print('noisy on the merged file (poseval reads', first, 'only):', on_merged['metrics'])

  with open(OUTPUT, 'w') as f:
    json.dump({'source': f'{REPOSITORY} {COMMIT}', 'numpy': np.__version__,
               'annotations': 'tests/fixtures/real_data/posetrack18/annotations',
               'cases': cases}, f, separators=(',', ':'))
    f.write('\n')
  print('wrote', OUTPUT, os.path.getsize(OUTPUT), 'bytes')


if __name__ == '__main__':
  main()
