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
from input_pipeline import mpii_convert
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
  annotation_ids: np.ndarray  # (N,) int64: the annotation's id (0 for a detection)

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


# ------------------------------------------------------------------------------ splits ---

# Where each format keeps a split's annotations, relative to the dataset root ({split} filled).
DEFAULT_ANNOTATIONS = {
    'coco': 'annotations/person_keypoints_{split}.json',
    'mpii': 'annot/{split}.json',
    'posetrack18': 'annotations/{split}',  # a folder of per-video files, or one merged file
}
FORMATS = tuple(DEFAULT_ANNOTATIONS)


@dataclasses.dataclass
class Split:
  """One split's annotations in COCO form, whatever the dataset's format, images located.

  ``data`` holds 'images' (each with ``path``, the image file found), 'annotations' and
  'categories'; ids are any non-negative integers (PoseTrack's have 11 digits).
  """
  data: dict
  source: str  # the annotation file or folder read, for messages
  skipped: tuple[str, ...] = ()  # image files not found and left out (skip_bad_images)

  @property
  def images(self) -> list[dict]:
    return self.data['images']

  @property
  def annotations(self) -> list[dict]:
    return self.data['annotations']


def read_split(root: str, split: str, *, annotations: str = '', format: str = 'coco',  # pylint: disable=redefined-builtin
               num_joints: int | None = None, skip_missing: bool = False) -> Split:
  """A split of the dataset at ``root``: its annotation file(s) read, every image located.

  ``annotations`` is the file (or PoseTrack folder) relative to ``root``, ``{split}`` filled
  in; '' is the format's default (``DEFAULT_ANNOTATIONS``). An image's ``file_name`` may hold
  sub-folders and is looked up in ``root/{split}``, ``root/images/{split}``, ``root/images``
  and ``root``, the first that holds it. A missing image is a ``DatasetError`` naming it,
  or, with ``skip_missing``, left out (with its people) and listed in ``skipped``.
  """
  if format not in DEFAULT_ANNOTATIONS:
    raise errors.ConfigError(f'config.dataset.format is {format!r}; expected one of {FORMATS}')
  if not tf.io.gfile.isdir(root):
    raise DatasetError(f'dataset folder not found: {root}')
  path = os.path.join(root, (annotations or DEFAULT_ANNOTATIONS[format]).format(split=split))
  if format == 'mpii':
    records = read_json(path)
    if not isinstance(records, list):
      raise DatasetError(f'{path}: expected the official MPII json, a list of person records')
    data = mpii_convert.to_coco(records, source=path)
  elif format == 'posetrack18' and tf.io.gfile.isdir(path):
    data = _merge([_coco_dict(read_json(f), f) for f in
                   sorted(tf.io.gfile.glob(os.path.join(path, '*.json')))], path)
  else:
    data = _coco_dict(read_json(path), path)
  _check(data, path, num_joints)
  images, skipped = _locate_images(data['images'], root, split, path, skip_missing)
  kept = {image['id'] for image in images}
  left_out = {image['id'] for image in data['images']} - kept
  data = dict(data, images=images, annotations=[a for a in data['annotations']
                                                if a.get('image_id') not in left_out])
  return Split(data, path, skipped)


def _coco_dict(data: Any, path: str) -> dict:
  if not isinstance(data, dict) or 'images' not in data or 'annotations' not in data:
    raise DatasetError(f'{path}: expected a COCO dict with "images" and "annotations"')
  return data


def _merge(parts: list[dict], folder: str) -> dict:
  """Per-video annotation files as one dict (PoseTrack18's ``annotations/{split}/*.json``)."""
  if not parts:
    raise DatasetError(f'{folder}: no .json annotation files in this folder')
  return {'images': [i for p in parts for i in p['images']],
          'annotations': [a for p in parts for a in p['annotations']],
          'categories': parts[0].get('categories', [])}


def _check(data: dict, path: str, num_joints: int | None) -> None:
  """Required keys, non-negative integer ids, and the joint count of the person category."""
  for image in data['images']:
    _require(image, ('id', 'file_name'), 'an image', path)
    if not isinstance(image['id'], int) or image['id'] < 0:
      raise DatasetError(f'{path}: image id {image["id"]!r} ({image["file_name"]}) is not a '
                         f'non-negative integer')
  for category in data.get('categories', []):
    names = category.get('keypoints')
    if (num_joints is not None and category.get('id') == PERSON_CATEGORY and names and
        len(names) != num_joints):
      raise DatasetError(f'{path}: the person category has {len(names)} keypoints '
                         f'({", ".join(names)}) but the config has {num_joints} joints '
                         f'(config.keypoints, config.model.num_joints)')


def _locate_images(images: list[dict], root: str, split: str, path: str,
                   skip_missing: bool) -> tuple[list[dict], tuple[str, ...]]:
  """The images with ``path`` set to the file found; each folder is listed once."""
  folders = [os.path.join(root, split), os.path.join(root, 'images', split),
             os.path.join(root, 'images'), root] if split else [root, os.path.join(root, 'images')]
  listings: dict[str, set[str]] = {}

  def exists(folder: str, name: str) -> bool:
    parent, base = os.path.split(os.path.join(folder, name))
    if parent not in listings:
      listings[parent] = (set(tf.io.gfile.listdir(parent)) if tf.io.gfile.isdir(parent)
                          else set())
    return base in listings[parent]

  found, missing = [], []
  for image in images:
    where = next((f for f in folders if exists(f, image['file_name'])), None)
    if where is None:
      missing.append(image['file_name'])
    else:
      found.append(dict(image, path=os.path.join(where, image['file_name'])))
  if missing and not skip_missing:
    raise DatasetError(
        f'{path}: {len(missing)} image file(s) not found, e.g. {missing[0]!r} (looked in '
        f'{", ".join(dict.fromkeys(folders))}); set config.dataset.skip_bad_images=True to '
        f'leave them out')
  return found, tuple(missing)


def _as_split(dataset: str | Split, split: str) -> Split:
  """``dataset`` itself, or the COCO-format split ``split`` of the folder ``dataset``."""
  return dataset if isinstance(dataset, Split) else read_split(dataset, split)


# ------------------------------------------------------------------------------ people ---


@dataclasses.dataclass(frozen=True)
class Person:
  """One labelled person of a split: its image and annotation records, box and keypoints."""
  image: dict
  annotation: dict
  box: tuple[float, float, float, float] | None  # cleaned x, y, w, h; None: own center/scale
  keypoints: np.ndarray  # (K, 3) float64
  area: float

  @property
  def id(self) -> int:
    return int(self.annotation.get('id', 0))

  def center_scale(self, aspect_ratio: float, padding: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 center and scale: the box's (``box_to_center_scale``) or the annotation's."""
    if self.box is not None:
      return box_to_center_scale(self.box, aspect_ratio, padding)
    scale = np.asarray(self.annotation['scale'], np.float32).reshape(-1)
    return (np.asarray(self.annotation['center'], np.float32),
            np.broadcast_to(scale, (2,)).astype(np.float32))


def labelled_people(dataset: str | Split, split: str = '', *,
                    num_joints: int = 17) -> list[Person]:
  """The people the official ``_load_coco_keypoint_annotation_kernal`` keeps, by image id.

  Not crowd, a valid box once clipped to the image, at least one labelled keypoint. An
  annotation with its own ``center`` and ``scale`` (MPII) is kept as it is, as the official
  MPII reader keeps every record. ``dataset`` is a ``Split`` or a COCO-format folder.
  """
  data = _as_split(dataset, split)
  path = data.source
  images = {image['id']: image for image in data.images}
  people = []
  for ann in sorted(data.annotations, key=lambda a: (a.get('image_id', 0), a.get('id', 0))):
    _require(ann, ('image_id', 'category_id'), 'an annotation', path)
    if ann.get('iscrowd', 0) or ann['category_id'] != PERSON_CATEGORY:
      continue
    image = images.get(ann['image_id'])
    if image is None:
      raise DatasetError(f'{path}: annotation {ann.get("id")} names image_id {ann["image_id"]}, '
                         f'which is not in "images"')
    keypoints = _keypoints(ann, num_joints, path)
    if keypoints is None:
      continue
    if 'center' in ann and 'scale' in ann:
      people.append(Person(image, ann, None, keypoints, float(ann.get('area', 0))))
      continue
    _require(ann, ('bbox',), 'an annotation', path)
    _require(image, ('width', 'height'), 'an image', path)
    x, y, w, h = (float(v) for v in ann['bbox'])
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(image['width'] - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(image['height'] - 1.0, y1 + max(0.0, h - 1.0))
    if not (ann.get('area', w * h) > 0 and x2 >= x1 and y2 >= y1) or keypoints.max() == 0:
      continue
    people.append(Person(image, ann, (x1, y1, x2 - x1, y2 - y1), keypoints,
                         float(ann.get('area', w * h))))
  return people


def _keypoints(ann: dict, num_joints: int, path: str) -> np.ndarray | None:
  """An annotation's (K, 3) keypoints, None if it has none, or an error on a wrong count."""
  keypoints = ann.get('keypoints') or []
  if len(keypoints) == 3 * num_joints:
    return np.asarray(keypoints, np.float64).reshape(num_joints, 3)
  if not keypoints:
    return None
  raise DatasetError(f'{path}: annotation {ann.get("id")} has {len(keypoints)} keypoint values '
                     f'({len(keypoints) / 3:g} joints) but the config has {num_joints} joints '
                     f'(config.keypoints, config.model.num_joints)')


def load_ground_truth(dataset: str | Split, split: str = '', *, aspect_ratio: float,
                      num_joints: int = 17, padding: float = BOX_PADDING) -> Instances:
  """Person instances with labelled keypoints (official ``_load_coco_keypoint_annotation``)."""
  rows = []
  for person in labelled_people(dataset, split, num_joints=num_joints):
    center, scale = person.center_scale(aspect_ratio, padding)
    rows.append((person.image['path'], person.image['id'], center, scale, person.keypoints,
                 1.0, person.area, person.id))
  return _to_instances(rows, num_joints)


def load_detections(path: str, dataset: str | Split, split: str = '', *, aspect_ratio: float,
                    num_joints: int = 17, score_threshold: float = 0.0,
                    padding: float = BOX_PADDING) -> Instances:
  """Person boxes of a COCO results file (official ``_load_coco_person_detection_results``)."""
  detections = read_json(path)
  if not isinstance(detections, list):
    raise DatasetError(f'{path}: expected a COCO results list of detections')
  if not detections:
    raise DatasetError(f'{path}: the detection file is empty')
  data = _as_split(dataset, split)
  known = {image['id']: image for image in data.images}
  rows = []
  for det in detections:
    _require(det, ('image_id', 'bbox', 'score', 'category_id'), 'a detection', path)
    if det['category_id'] != PERSON_CATEGORY or det['score'] < score_threshold:
      continue
    if det['image_id'] not in known:
      raise DatasetError(f'{path}: detection for image_id {det["image_id"]}, which is not in '
                         f'{data.source}')
    center, scale = box_to_center_scale(det['bbox'], aspect_ratio, padding)
    box = det['bbox']
    rows.append((known[det['image_id']]['path'], det['image_id'], center, scale,
                 np.zeros((num_joints, 3)), float(det['score']), float(box[2] * box[3]), 0))
  return _to_instances(rows, num_joints)


def _to_instances(rows, num_joints: int) -> Instances:
  if not rows:
    return Instances(np.zeros((0,), object), np.zeros((0,), np.int64),
                     np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32),
                     np.zeros((0, num_joints, 3)), np.zeros((0,), np.float32),
                     np.zeros((0,), np.float32), np.zeros((0,), np.int64))
  paths, ids, centers, scales, keypoints, scores, areas, annotation_ids = zip(*rows)
  return Instances(np.array(paths, object), np.array(ids, np.int64), np.stack(centers),
                   np.stack(scales), np.stack(keypoints), np.array(scores, np.float32),
                   np.array(areas, np.float32), np.array(annotation_ids, np.int64))


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


def load_people_images(dataset: str | Split, split: str = '', *,
                       num_joints: int = 17) -> PeopleImages:
  """The images of the official bottom-up ``CocoKeypoints``: every image with an annotation.

  A person with a labelled keypoint gives a row of joints; a crowd region or a person
  without labelled keypoints is an ignore region (its segmentation, else its box), as the
  official mask; so are an image's ``ignore_regions_x/y`` polygons (PoseTrack18).
  """
  data = _as_split(dataset, split)
  path = data.source
  by_image: dict[int, list] = {}
  for ann in sorted(data.annotations, key=lambda a: (a.get('image_id', 0), a.get('id', 0))):
    _require(ann, ('image_id', 'category_id'), 'an annotation', path)
    if ann['category_id'] == PERSON_CATEGORY:
      by_image.setdefault(ann['image_id'], []).append(ann)
  rows = []
  for image in sorted(data.images, key=lambda i: i['id']):
    _require(image, ('width', 'height'), 'an image', path)
    anns = by_image.pop(image['id'], [])
    if not anns:
      continue
    joints, ignore = [], list(_ignore_regions(image))
    for ann in anns:
      keypoints = _keypoints(ann, num_joints, path)
      keypoints = np.zeros((num_joints, 3)) if keypoints is None else keypoints
      labelled = int(ann.get('num_keypoints', np.count_nonzero(keypoints[:, 2] > 0)))
      if ann.get('iscrowd', 0) or labelled == 0:
        ignore.append(_ignore_segmentation(ann, path))
      if (not ann.get('iscrowd', 0) or labelled > 0) and np.any(keypoints[:, 2] > 0):
        joints.append(keypoints)
    rows.append((image['path'], image['id'], (image['height'], image['width']),
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


def _ignore_segmentation(ann: dict, path: str) -> Any:
  """The pixels of a crowd or a person without keypoints: its segmentation, else its box."""
  if ann.get('segmentation'):
    return ann['segmentation']
  if 'bbox' in ann:
    x, y, w, h = (float(v) for v in ann['bbox'])
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]
  raise DatasetError(f'{path}: annotation {ann.get("id")} is a crowd or a person without '
                     f'keypoints, whose "segmentation" or "bbox" the ignore mask needs, but it '
                     f'has neither')


def _ignore_regions(image: dict) -> list:
  """PoseTrack18's ``ignore_regions_x/y`` of an image as COCO polygon segmentations."""
  regions = zip(image.get('ignore_regions_x') or [], image.get('ignore_regions_y') or [])
  return [[[float(v) for xy in zip(xs, ys) for v in xy]] for xs, ys in regions if len(xs) >= 3]
