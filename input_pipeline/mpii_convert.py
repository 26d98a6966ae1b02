"""MPII annotations in the official json layout (``annot/{train,valid}.json``) to COCO format.

Each official record is one person: ``image``, ``center``, ``scale`` (person height / 200),
``joints`` (16 x 2, 1-based MATLAB pixels) and ``joints_vis``. The COCO file has the 16 MPII
keypoints (0-based pixels, v = 2 when labelled, else 0 with x = y = 0), the person box
``center +- scale * 100`` and the official center and scale kept as ``mpii_center`` and
``mpii_scale``, so that ``input_pipeline.coco`` reads MPII like COCO (``num_joints=16``).
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


def to_coco(records: Sequence[dict], image_dir: str | None = None,
            source: str = 'the MPII annotations') -> dict[str, Any]:
  """A COCO keypoint dataset dict of official MPII records (image sizes read from image_dir)."""
  images: dict[str, dict] = {}
  annotations = []
  for i, record in enumerate(records):
    for key in ('image', 'center', 'scale', 'joints', 'joints_vis'):
      if key not in record:
        raise errors.ConfigError(f'{source}: record {i} has no {key!r} (expected the official '
                                 f'MPII json layout: image, center, scale, joints, joints_vis)')
    name = record['image']
    if name not in images:
      width = height = 0
      if image_dir is not None:
        path = os.path.join(image_dir, name)
        try:
          with Image.open(path) as image:
            width, height = image.size
        except OSError as e:
          raise errors.UserError(f'{path}: cannot read the image size ({e})') from e
      images[name] = {'id': len(images) + 1, 'file_name': name, 'width': width,
                      'height': height}
    num_joints = len(kp.MPII_KEYPOINT_NAMES)
    joints = np.asarray(record['joints'], np.float64)
    visible = np.asarray(record['joints_vis'], np.float64).reshape(-1) > 0
    if joints.size != 2 * num_joints or visible.size != num_joints:
      raise errors.UserError(f'{source}: record {i} has joints of shape {joints.shape} and '
                             f'{visible.size} joints_vis; expected ({num_joints}, 2) and '
                             f'{num_joints}')
    joints = joints.reshape(num_joints, 2)
    keypoints = np.zeros((len(joints), 3))
    keypoints[visible, :2] = joints[visible] - 1.0
    keypoints[visible, 2] = 2
    center = np.asarray(record['center'], np.float64)
    side = float(record['scale']) * kp.PIXEL_STD
    annotations.append({
        'id': i + 1, 'image_id': images[name]['id'], 'category_id': kp.PERSON_CATEGORY,
        'iscrowd': 0,
        'bbox': [float(center[0] - side / 2), float(center[1] - side / 2), side, side],
        'area': side * side, 'num_keypoints': int(visible.sum()),
        'keypoints': [float(v) for v in keypoints.reshape(-1)],
        'mpii_center': [float(v) for v in center], 'mpii_scale': float(record['scale'])})
  return {'images': list(images.values()), 'annotations': annotations,
          'categories': [mpii_category()]}
