"""COCO-format keypoint annotations and person detections to top-down person instances.

As the official ``COCODataset``: boxes are cleaned and turned into center/scale at the input's
aspect ratio (pixel_std 200, padding 1.25); for training, people without labelled keypoints
are dropped; for evaluation, either those ground-truth boxes or a detection results file.
Paths may be local or anything ``tf.io.gfile`` opens (gs://...).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
import tensorflow as tf

from hrnet_jax import errors
from hrnet_jax.keypoints import PERSON_CATEGORY, PIXEL_STD

BOX_PADDING = 1.25


class DatasetError(errors.UserError):
  """A dataset file or folder is missing or malformed; the message names it."""


@dataclasses.dataclass
class Instances:
  """Person instances, one row each (struct of arrays, ready to become tensors)."""
  image_paths: np.ndarray  # (N,) str
  image_ids: np.ndarray  # (N,) int64
  centers: np.ndarray  # (N, 2) float32
  scales: np.ndarray  # (N, 2) float32
  keypoints: np.ndarray  # (N, K, 3) float64: x, y, visibility (0, 1, 2 as in COCO)
  scores: np.ndarray  # (N,) float32: 1 for ground truth, the detector's score otherwise
  areas: np.ndarray  # (N,) float32: annotation area (ground truth) or box area

  def __len__(self) -> int:
    return len(self.image_ids)

  def subset(self, index) -> 'Instances':
    """The instances at ``index`` (an index array or slice)."""
    return Instances(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


def box_to_center_scale(box, aspect_ratio: float, padding: float = BOX_PADDING,
                        pixel_std: float = PIXEL_STD) -> tuple[np.ndarray, np.ndarray]:
  """The official ``_xywh2cs``: (x, y, w, h) to float32 center and scale."""
  x, y, w, h = (float(v) for v in box[:4])
  center = np.array([x + w * 0.5, y + h * 0.5], np.float32)
  if w > aspect_ratio * h:
    h = w * 1.0 / aspect_ratio
  elif w < aspect_ratio * h:
    w = h * aspect_ratio
  scale = np.array([w * 1.0 / pixel_std, h * 1.0 / pixel_std], np.float32)
  return center, scale * padding


def read_json(path: str) -> Any:
  """Parses a JSON file from any tf.io.gfile path, naming the file in every error."""
  if not tf.io.gfile.exists(path):
    raise DatasetError(f'{path}: file not found')
  try:
    with tf.io.gfile.GFile(path, 'r') as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DatasetError(f'{path}: not valid JSON ({e})') from e


def write_json(path: str, value: Any, indent: int | None = None) -> None:
  """Writes JSON to any tf.io.gfile path atomically: a temporary file, then a rename."""
  parent = os.path.dirname(path)
  if parent:
    tf.io.gfile.makedirs(parent)
  with tf.io.gfile.GFile(path + '.tmp', 'w') as f:
    json.dump(value, f, indent=indent)
  tf.io.gfile.rename(path + '.tmp', path, overwrite=True)


def annotation_path(root: str, split: str) -> str:
  """``root/annotations/person_keypoints_{split}.json``."""
  return os.path.join(root, 'annotations', f'person_keypoints_{split}.json')


def image_dir(root: str, split: str) -> str:
  """The image folder of a split: ``root/{split}`` or the official ``root/images/{split}``."""
  candidates = [os.path.join(root, split), os.path.join(root, 'images', split)]
  for candidate in candidates:
    if tf.io.gfile.isdir(candidate):
      return candidate
  raise DatasetError(f'image folder of split {split!r} not found: tried {", ".join(candidates)}')


def _require(record: dict, keys: tuple[str, ...], what: str, path: str) -> None:
  missing = [k for k in keys if k not in record]
  if missing:
    raise DatasetError(f'{path}: {what} is missing key(s) {missing}: {str(record)[:200]}')


def _read_annotations(root: str, split: str) -> tuple[dict, str]:
  """A split's COCO annotation dict and its path, or a DatasetError naming what is wrong."""
  if not tf.io.gfile.isdir(root):
    raise DatasetError(f'dataset folder not found: {root}')
  path = annotation_path(root, split)
  data = read_json(path)
  if not isinstance(data, dict) or 'images' not in data or 'annotations' not in data:
    raise DatasetError(f'{path}: expected a COCO dict with "images" and "annotations"')
  return data, path


def labelled_people(root: str, split: str, *, num_joints: int = 17):
  """(image record, annotation id, cleaned box x, y, w, h, (K, 3) keypoints, area) per person.

  The people the official ``_load_coco_keypoint_annotation_kernal`` keeps: not crowd, a
  valid box once clipped to the image, at least one labelled keypoint; sorted by image id.
  """
  data, path = _read_annotations(root, split)
  images = {}
  for image in data['images']:
    _require(image, ('id', 'file_name', 'width', 'height'), 'an image', path)
    images[image['id']] = image
  people = []
  for ann in sorted(data['annotations'], key=lambda a: (a.get('image_id', 0), a.get('id', 0))):
    _require(ann, ('image_id', 'bbox', 'category_id'), 'an annotation', path)
    if ann.get('iscrowd', 0) or ann['category_id'] != PERSON_CATEGORY:
      continue
    image = images.get(ann['image_id'])
    if image is None:
      raise DatasetError(f'{path}: annotation {ann.get("id")} names image_id {ann["image_id"]}, '
                         f'which is not in "images"')
    x, y, w, h = (float(v) for v in ann['bbox'])
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(image['width'] - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(image['height'] - 1.0, y1 + max(0.0, h - 1.0))
    if not (ann.get('area', w * h) > 0 and x2 >= x1 and y2 >= y1):
      continue
    keypoints = ann.get('keypoints') or []
    if len(keypoints) != 3 * num_joints:
      if not keypoints:
        continue
      raise DatasetError(f'{path}: annotation {ann.get("id")} has {len(keypoints)} keypoint '
                         f'values, expected {3 * num_joints}')
    if max(keypoints) == 0:
      continue
    people.append((image, int(ann.get('id', 0)), (x1, y1, x2 - x1, y2 - y1),
                   np.asarray(keypoints, np.float64).reshape(num_joints, 3),
                   float(ann.get('area', w * h))))
  return people


def load_ground_truth(root: str, split: str, *, aspect_ratio: float, num_joints: int = 17,
                      padding: float = BOX_PADDING) -> Instances:
  """Person instances with labelled keypoints (official ``_load_coco_keypoint_annotation``)."""
  people = labelled_people(root, split, num_joints=num_joints)
  folder = image_dir(root, split)
  rows = []
  for image, _, box, keypoints, area in people:
    center, scale = box_to_center_scale(box, aspect_ratio, padding)
    rows.append((os.path.join(folder, image['file_name']), image['id'], center, scale,
                 keypoints, 1.0, area))
  return _to_instances(rows, num_joints)


def load_detections(path: str, root: str, split: str, *, aspect_ratio: float,
                    num_joints: int = 17, score_threshold: float = 0.0,
                    padding: float = BOX_PADDING) -> Instances:
  """Person boxes of a COCO results file (official ``_load_coco_person_detection_results``)."""
  detections = read_json(path)
  if not isinstance(detections, list):
    raise DatasetError(f'{path}: expected a COCO results list of detections')
  if not detections:
    raise DatasetError(f'{path}: the detection file is empty')
  known = {img['id']: img for img in read_json(annotation_path(root, split))['images']}
  folder = image_dir(root, split)
  rows = []
  for det in detections:
    _require(det, ('image_id', 'bbox', 'score', 'category_id'), 'a detection', path)
    if det['category_id'] != PERSON_CATEGORY or det['score'] < score_threshold:
      continue
    if det['image_id'] not in known:
      raise DatasetError(f'{path}: detection for image_id {det["image_id"]}, which is not in '
                         f'{annotation_path(root, split)}')
    center, scale = box_to_center_scale(det['bbox'], aspect_ratio, padding)
    box = det['bbox']
    rows.append((os.path.join(folder, known[det['image_id']]['file_name']), det['image_id'],
                 center, scale, np.zeros((num_joints, 3)), float(det['score']),
                 float(box[2] * box[3])))
  return _to_instances(rows, num_joints)


def _to_instances(rows, num_joints: int) -> Instances:
  if not rows:
    return Instances(np.zeros((0,), object), np.zeros((0,), np.int64),
                     np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32),
                     np.zeros((0, num_joints, 3)), np.zeros((0,), np.float32),
                     np.zeros((0,), np.float32))
  paths, ids, centers, scales, keypoints, scores, areas = zip(*rows)
  return Instances(np.array(paths, object), np.array(ids, np.int64), np.stack(centers),
                   np.stack(scales), np.stack(keypoints), np.array(scores, np.float32),
                   np.array(areas, np.float32))


@dataclasses.dataclass
class PeopleImages:
  """Whole images with all their people, for bottom-up training (one row per image)."""
  image_paths: np.ndarray  # (N,) str
  image_ids: np.ndarray  # (N,) int64
  sizes: np.ndarray  # (N, 2) int64: height, width
  joints: list  # N arrays (P, K, 3) float64: x, y, visibility of the labelled people
  ignore: list  # N lists of COCO segmentations whose pixels the loss ignores

  def __len__(self) -> int:
    return len(self.image_ids)


def load_people_images(root: str, split: str, *, num_joints: int = 17) -> PeopleImages:
  """The images of the official bottom-up ``CocoKeypoints``: every image with an annotation.

  A person with a labelled keypoint gives a row of joints; a crowd region or a person
  without labelled keypoints is an ignore region (its segmentation), as the official mask.
  """
  data, path = _read_annotations(root, split)
  by_image: dict[int, list] = {}
  for ann in sorted(data['annotations'], key=lambda a: (a.get('image_id', 0), a.get('id', 0))):
    _require(ann, ('image_id', 'category_id'), 'an annotation', path)
    if ann['category_id'] == PERSON_CATEGORY:
      by_image.setdefault(ann['image_id'], []).append(ann)
  folder = image_dir(root, split)
  rows = []
  for image in sorted(data['images'], key=lambda i: i.get('id', 0)):
    _require(image, ('id', 'file_name', 'width', 'height'), 'an image', path)
    anns = by_image.pop(image['id'], [])
    if not anns:
      continue
    joints, ignore = [], []
    for ann in anns:
      keypoints = np.asarray(ann.get('keypoints') or np.zeros(3 * num_joints), np.float64)
      if keypoints.size != 3 * num_joints:
        raise DatasetError(f'{path}: annotation {ann.get("id")} has {keypoints.size} keypoint '
                           f'values, expected {3 * num_joints}')
      keypoints = keypoints.reshape(num_joints, 3)
      labelled = int(ann.get('num_keypoints', np.count_nonzero(keypoints[:, 2] > 0)))
      if ann.get('iscrowd', 0) or labelled == 0:
        if 'segmentation' not in ann:
          raise DatasetError(f'{path}: annotation {ann.get("id")} is a crowd or a person '
                             f'without keypoints, whose "segmentation" the ignore mask needs, '
                             f'but it has none')
        ignore.append(ann['segmentation'])
      if (not ann.get('iscrowd', 0) or labelled > 0) and np.any(keypoints[:, 2] > 0):
        joints.append(keypoints)
    rows.append((os.path.join(folder, image['file_name']), image['id'],
                 (image['height'], image['width']),
                 np.stack(joints) if joints else np.zeros((0, num_joints, 3)), ignore))
  if by_image:
    raise DatasetError(f'{path}: annotations name image_id(s) {sorted(by_image)[:5]}, which '
                       f'are not in "images"')
  if not rows:
    return PeopleImages(np.zeros((0,), object), np.zeros((0,), np.int64),
                        np.zeros((0, 2), np.int64), [], [])
  paths, ids, sizes, joints, ignore = zip(*rows)
  return PeopleImages(np.array(paths, object), np.array(ids, np.int64),
                      np.array(sizes, np.int64), list(joints), list(ignore))
