"""A synthetic COCO-format keypoint dataset: stick-figure people drawn on varied backgrounds.

``write_dataset(root, num_train, num_val)`` writes ``root/{train,val}/*.jpg`` and
``root/annotations/person_keypoints_{train,val}.json`` with the COCO 17-keypoint skeleton:
several people per image at varied sizes and poses, boxes, areas, visibility 0 (outside the
image, unlabelled), 1 (labelled, hidden by an occluder or another person) and 2 (visible).
Left limbs are drawn in warm colours and right limbs in cool ones, so left and right can be
told apart as in real images. pycocotools loads the files and COCOeval scores them.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from hrnet_jax import keypoints as kp
from input_pipeline import coco

# A standing person facing the camera, pelvis at the origin, height ~1 (y down). The
# person's left side is on the image's right when facing the camera.
_HEAD = np.array([0.0, -0.84])
_NECK = np.array([0.0, -0.62])
_SHOULDER, _HIP = 0.11, 0.07
_UPPER_ARM, _FOREARM, _THIGH, _SHIN = 0.17, 0.15, 0.25, 0.24
_HEAD_RADIUS = 0.07

_LEFT_COLOURS = [(0, 0, 255), (0, 128, 255), (0, 200, 255), (60, 60, 220)]  # BGR, warm
_RIGHT_COLOURS = [(255, 0, 0), (255, 160, 0), (200, 255, 0), (220, 60, 60)]  # BGR, cool


def _polar(angle_deg: float, length: float) -> np.ndarray:
  a = np.deg2rad(angle_deg)
  return np.array([np.sin(a), np.cos(a)]) * length  # 0 degrees points down


def random_pose(rng: np.random.Generator) -> np.ndarray:
  """17 COCO keypoints (x, y) of a random pose, in body units, pelvis at the origin."""
  facing = 1.0 if rng.random() < 0.8 else -1.0  # -1: seen from the back (left on the left)
  pts = np.zeros((17, 2))
  head = _HEAD + np.array([rng.normal(0, 0.02), 0])
  turn = rng.uniform(-0.03, 0.03)
  pts[0] = head + np.array([turn * facing, 0.01])  # nose
  pts[1] = head + np.array([(0.025 + turn) * facing, -0.02])  # left eye
  pts[2] = head + np.array([(-0.025 + turn) * facing, -0.02])  # right eye
  pts[3] = head + np.array([0.055 * facing, -0.005])  # left ear
  pts[4] = head + np.array([-0.055 * facing, -0.005])  # right ear
  for side, sign in ((0, 1.0), (1, -1.0)):  # 0: left, 1: right
    shoulder = _NECK + np.array([sign * facing * _SHOULDER, 0.0])
    hip = np.array([sign * facing * _HIP, 0.0])
    arm = rng.uniform(-30, 160) * sign * facing
    elbow = shoulder + _polar(arm, _UPPER_ARM)
    wrist = elbow + _polar(arm + rng.uniform(-20, 120) * sign * facing, _FOREARM)
    leg = rng.uniform(-10, 45) * sign * facing
    knee = hip + _polar(leg, _THIGH)
    ankle = knee + _polar(leg + rng.uniform(-40, 10) * sign * facing, _SHIN)
    pts[5 + side], pts[7 + side], pts[9 + side] = shoulder, elbow, wrist
    pts[11 + side], pts[13 + side], pts[15 + side] = hip, knee, ankle
  lean = np.deg2rad(rng.normal(0, 12))
  rotation = np.array([[np.cos(lean), -np.sin(lean)], [np.sin(lean), np.cos(lean)]])
  return pts @ rotation.T


def random_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A smooth two-colour gradient with random shapes and noise (BGR uint8)."""
  c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
  t = np.linspace(0, 1, width if rng.random() < 0.5 else height)
  ramp = c0 + (c1 - c0) * t[:, None]
  image = (np.broadcast_to(ramp[None], (height, width, 3)) if len(t) == width
           else np.broadcast_to(ramp[:, None], (height, width, 3))).copy()
  for _ in range(rng.integers(2, 8)):
    colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
    x, y = int(rng.uniform(0, width)), int(rng.uniform(0, height))
    if rng.random() < 0.5:
      cv2.rectangle(image, (x, y), (x + int(rng.uniform(10, width / 2)),
                                    y + int(rng.uniform(10, height / 2))), colour, -1)
    else:
      cv2.circle(image, (x, y), int(rng.uniform(5, width / 5)), colour, -1)
  image += rng.normal(0, 6, image.shape)
  return np.clip(cv2.GaussianBlur(image, (0, 0), 1.0), 0, 255)


def _limb_colour(a: int, b: int, index: int) -> tuple[int, int, int]:
  left, right = set(range(1, 17, 2)), set(range(2, 17, 2))
  if a in left and b in left:
    return _LEFT_COLOURS[index % len(_LEFT_COLOURS)]
  if a in right and b in right:
    return _RIGHT_COLOURS[index % len(_RIGHT_COLOURS)]
  return (200, 200, 200)


def draw_person(image: np.ndarray, labels: np.ndarray, label: int, points: np.ndarray,
                height: float, skin: tuple) -> None:
  """Draws one stick figure onto ``image`` and marks its pixels with ``label``."""
  thickness = max(2, int(round(height * 0.045)))
  layer = np.zeros(labels.shape, np.uint8)
  for i, (a, b) in enumerate(kp.COCO_SKELETON):
    if (a, b) in ((1, 2), (0, 1), (0, 2), (1, 3), (2, 4)):
      continue  # the head is a disc
    pa, pb = tuple(int(v) for v in points[a]), tuple(int(v) for v in points[b])
    cv2.line(image, pa, pb, _limb_colour(a, b, i), thickness, cv2.LINE_AA)
    cv2.line(layer, pa, pb, 1, thickness)
  centre = tuple(int(v) for v in (points[3] + points[4]) / 2)
  radius = max(3, int(height * _HEAD_RADIUS))
  cv2.circle(image, centre, radius, skin, -1, cv2.LINE_AA)
  cv2.circle(layer, centre, radius, 1, -1)
  for j in (0, 1, 2):  # nose and eyes as dark dots, ears as coloured dots
    cv2.circle(image, tuple(int(v) for v in points[j]), max(1, thickness // 2), (30, 30, 30), -1)
  cv2.circle(image, tuple(int(v) for v in points[3]), max(1, thickness // 2), _LEFT_COLOURS[0], -1)
  cv2.circle(image, tuple(int(v) for v in points[4]), max(1, thickness // 2), _RIGHT_COLOURS[0], -1)
  labels[layer > 0] = label


def make_image(rng: np.random.Generator, image_id: int,
               size_range: tuple[int, int] = (192, 320),
               max_people: int = 3) -> tuple[np.ndarray, list[dict]]:
  """One image (BGR uint8, sides in ``size_range``, 1 to ``max_people`` people) and its COCO
  person annotations."""
  height, width = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
  image = random_background(rng, height, width)
  labels = np.full((height, width), -1, np.int32)
  people = []
  for person in range(int(rng.integers(1, max_people + 1))):
    size = rng.uniform(0.18, 0.62) * height  # a person is ~1.4 x size tall
    slack = 0.15 * size  # some people reach past the image border
    pelvis = np.array([rng.uniform(0.08, 0.92) * width,
                       rng.uniform(0.9 * size - slack, height - 0.5 * size + slack)])
    points = pelvis + random_pose(rng) * size
    skin = tuple(float(c) for c in rng.uniform(60, 230, 3))
    draw_person(image, labels, person, points, size, skin)
    people.append((points, size))
  for _ in range(int(rng.integers(0, 3))):  # occluders, drawn over everyone
    x, y = int(rng.uniform(0, width)), int(rng.uniform(0, height))
    w, h = int(rng.uniform(15, width / 4)), int(rng.uniform(15, height / 4))
    colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
    cv2.rectangle(image, (x, y), (x + w, y + h), colour, -1)
    labels[y:y + h, x:x + w] = -2
  annotations = []
  for person, (points, size) in enumerate(people):
    inside = ((points[:, 0] >= 0) & (points[:, 0] <= width - 1) &
              (points[:, 1] >= 0) & (points[:, 1] <= height - 1))
    if inside.sum() < 3:
      continue
    keypoints = []
    for j in range(17):
      if not inside[j]:
        keypoints += [0, 0, 0]
        continue
      x, y = float(points[j, 0]), float(points[j, 1])
      seen = labels[int(round(y)), int(round(x))] == person
      keypoints += [round(x, 2), round(y, 2), 2 if seen else 1]
    mask = labels == person
    if not mask.any():
      continue
    ys, xs = np.nonzero(mask)
    vis = points[inside]
    x0 = float(max(0.0, min(xs.min(), vis[:, 0].min()) - 2))
    y0 = float(max(0.0, min(ys.min(), vis[:, 1].min()) - 2))
    x1 = float(min(width - 1.0, max(xs.max(), vis[:, 0].max()) + 2))
    y1 = float(min(height - 1.0, max(ys.max(), vis[:, 1].max()) + 2))
    annotations.append({
        'image_id': image_id, 'category_id': kp.PERSON_CATEGORY, 'iscrowd': 0,
        'bbox': [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
        # A person's area: its bounding box share that COCO people typically cover.
        'area': round(float((x1 - x0) * (y1 - y0) * 0.55), 2),
        'keypoints': keypoints,
        'num_keypoints': int(sum(1 for v in keypoints[2::3] if v > 0)),
    })
  return np.clip(image, 0, 255).astype(np.uint8), annotations


def categories() -> list[dict]:
  """The COCO person category with its keypoint names and (1-based) skeleton."""
  return [{'id': kp.PERSON_CATEGORY, 'name': 'person', 'supercategory': 'person',
           'keypoints': list(kp.COCO_KEYPOINT_NAMES),
           'skeleton': [[a + 1, b + 1] for a, b in kp.COCO_SKELETON]}]


def write_split(root: str, split: str, num_images: int, seed: int, first_id: int = 1,
                size_range: tuple[int, int] = (192, 320), max_people: int = 3) -> str:
  """Writes one split's JPEGs and annotation file; returns the annotation path."""
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, split), exist_ok=True)
  images, annotations = [], []
  for i in range(num_images):
    image_id = first_id + i
    image, anns = make_image(rng, image_id, size_range, max_people)
    file_name = f'{image_id:012d}.jpg'
    if not cv2.imwrite(os.path.join(root, split, file_name), image,
                       [cv2.IMWRITE_JPEG_QUALITY, 92]):
      raise OSError(f'could not write {os.path.join(root, split, file_name)}')
    images.append({'id': image_id, 'file_name': file_name, 'height': image.shape[0],
                   'width': image.shape[1]})
    for ann in anns:
      ann['id'] = len(annotations) + 1
      annotations.append(ann)
  path = coco.annotation_path(root, split)
  coco.write_json(path, {'info': {'description': 'hrnet-jax synthetic keypoints', 'seed': seed},
                         'images': images, 'annotations': annotations,
                         'categories': categories()})
  return path


def write_dataset(root: str, num_train: int, num_val: int, seed: int = 0,
                  size_range: tuple[int, int] = (192, 320), max_people: int = 3) -> None:
  """Writes the train and val splits under ``root`` (image ids do not overlap)."""
  write_split(root, 'train', num_train, seed=seed * 2 + 1, first_id=1, size_range=size_range,
              max_people=max_people)
  write_split(root, 'val', num_val, seed=seed * 2 + 2, first_id=1_000_000,
              size_range=size_range, max_people=max_people)
