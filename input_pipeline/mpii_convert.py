"""MPII annotations in the official json layout (``annot/{train,valid}.json``) in COCO form.

Each official record is one person: ``image``, ``center``, ``scale`` (person height / 200),
``joints`` (16 x 2, 1-based MATLAB pixels) and ``joints_vis``. The COCO form has the 16 MPII
keypoints (0-based pixels, v = 2 where labelled, else x = y = v = 0) and the official crop
as ``center`` and ``scale``, which ``input_pipeline.coco`` uses instead of a box. The dataset
reader (``coco.read_split`` with format 'mpii') reads the official json directly.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from hrnet_jax import errors
from hrnet_jax import keypoints as kp


def mpii_category() -> dict[str, Any]:
  """The COCO category of MPII people: 16 keypoint names and the 1-based skeleton."""
  return {'id': kp.PERSON_CATEGORY, 'name': 'person', 'supercategory': 'person',
          'keypoints': list(kp.MPII_KEYPOINT_NAMES),
          'skeleton': [[a + 1, b + 1] for a, b in kp.MPII_SKELETON]}


def official_center_scale(record: dict) -> tuple[np.ndarray, np.ndarray]:
  """The official ``MPIIDataset._get_db`` crop: center moved down 15 x scale, scale x 1.25,
  both 0-based (MATLAB's 1-based pixels minus 1); scale is (s, s)."""
  center = np.array(record['center'], np.float64)
  scale = np.array([record['scale'], record['scale']], np.float64)
  if center[0] != -1:
    center[1] = center[1] + 15 * scale[1]
    scale = scale * 1.25
  return center - 1, scale


def to_coco(records: Sequence[dict], image_dir: str | None = None,
            source: str = 'the MPII annotations') -> dict[str, Any]:
  """A COCO keypoint dataset dict of official MPII records, one annotation per record in order.

  Each annotation keeps the official crop as ``center`` and ``scale`` (``official_center_scale``)
  and the record's ``headbox`` if it has one; ``bbox`` is that crop's square. Image ids are the
  file names' numbers where they are numbers; sizes are read from ``image_dir`` if given.
  """
  images: dict[str, dict] = {}
  annotations = []
  num_joints = len(kp.MPII_KEYPOINT_NAMES)
  for i, record in enumerate(records):
    for key in ('image', 'center', 'scale'):
      if key not in record:
        raise errors.UserError(f'{source}: record {i} has no {key!r} (expected the official '
                               f'MPII json layout: image, center, scale, joints, joints_vis)')
    name = record['image']
    if name not in images:
      images[name] = _image_record(name, len(images), image_dir)
    joints = np.asarray(record.get('joints', np.zeros((num_joints, 2))), np.float64)
    visible = np.asarray(record.get('joints_vis', np.zeros(num_joints)), np.float64).reshape(-1)
    if joints.size != 2 * num_joints or visible.size != num_joints:
      raise errors.UserError(f'{source}: record {i} has joints of shape {joints.shape} and '
                             f'{visible.size} joints_vis; expected ({num_joints}, 2) and '
                             f'{num_joints} (the 16 MPII joints)')
    keypoints = np.concatenate([joints.reshape(num_joints, 2) - 1.0,
                                2.0 * (visible[:, None] > 0)], axis=1)  # COCO's v = 2
    keypoints[visible == 0] = 0.0
    center, scale = official_center_scale(record)
    side = float(scale[0]) * kp.PIXEL_STD
    annotation = {
        'id': i + 1, 'image_id': images[name]['id'], 'category_id': kp.PERSON_CATEGORY,
        'iscrowd': 0,
        'bbox': [float(center[0] - side / 2), float(center[1] - side / 2), side, side],
        'area': side * side, 'num_keypoints': int((visible > 0).sum()),
        'keypoints': [float(v) for v in keypoints.reshape(-1)],
        'center': [float(v) for v in center], 'scale': [float(v) for v in scale]}
    if 'headbox' in record:
      annotation['headbox'] = [float(v) for v in np.asarray(record['headbox']).reshape(-1)]
    annotations.append(annotation)
  return {'images': list(images.values()), 'annotations': annotations,
          'categories': [mpii_category()]}


def _image_record(name: str, count: int, image_dir: str | None) -> dict[str, Any]:
  """The COCO image record of an MPII file name (its size read only with ``image_dir``)."""
  stem = os.path.splitext(os.path.basename(name))[0]
  record = {'id': int(stem) if stem.isdigit() else count + 1, 'file_name': name}
  if image_dir is not None:
    path = os.path.join(image_dir, name)
    try:
      with Image.open(path) as image:
        record['width'], record['height'] = image.size
    except OSError as e:
      raise errors.UserError(f'{path}: cannot read the image size ({e})') from e
  return record
