"""The official per-sample numpy/cv2 code (JointsDataset, transforms.py), as a test reference.

Transcribed to check our TF ops on random cases beyond the official fixtures; the fixtures
themselves were made by running the official code.
"""

import cv2
import numpy as np


def get_dir(src_point, rot_rad):
  sn, cs = np.sin(rot_rad), np.cos(rot_rad)
  return [src_point[0] * cs - src_point[1] * sn, src_point[0] * sn + src_point[1] * cs]


def get_3rd_point(a, b):
  direct = a - b
  return b + np.array([-direct[1], direct[0]], dtype=np.float32)


def get_affine_transform(center, scale, rot, output_size, inv=0):
  scale_tmp = np.asarray(scale) * 200.0
  src_w, dst_w, dst_h = scale_tmp[0], output_size[0], output_size[1]
  rot_rad = np.pi * rot / 180
  src_dir = get_dir([0, src_w * -0.5], rot_rad)
  dst_dir = np.array([0, dst_w * -0.5], np.float32)
  src = np.zeros((3, 2), dtype=np.float32)
  dst = np.zeros((3, 2), dtype=np.float32)
  src[0, :] = center
  src[1, :] = center + src_dir
  dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
  dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
  src[2:, :] = get_3rd_point(src[0, :], src[1, :])
  dst[2:, :] = get_3rd_point(dst[0, :], dst[1, :])
  if inv:
    return cv2.getAffineTransform(np.float32(dst), np.float32(src))
  return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def affine_transform(pt, t):
  return np.dot(t, np.array([pt[0], pt[1], 1.0]).T)[:2]


def fliplr_joints(joints, joints_vis, width, matched_parts):
  joints = joints.copy()
  joints_vis = joints_vis.copy()
  joints[:, 0] = width - joints[:, 0] - 1
  for a, b in matched_parts:
    joints[a, :], joints[b, :] = joints[b, :], joints[a, :].copy()
    joints_vis[a, :], joints_vis[b, :] = joints_vis[b, :], joints_vis[a, :].copy()
  return joints * joints_vis, joints_vis


def generate_target(joints, joints_vis, image_size, heatmap_size, sigma):
  num_joints = joints.shape[0]
  target_weight = np.ones((num_joints, 1), dtype=np.float32)
  target_weight[:, 0] = joints_vis[:, 0]
  target = np.zeros((num_joints, heatmap_size[1], heatmap_size[0]), dtype=np.float32)
  tmp_size = sigma * 3
  for joint_id in range(num_joints):
    feat_stride = np.asarray(image_size) / np.asarray(heatmap_size)
    mu_x = int(joints[joint_id][0] / feat_stride[0] + 0.5)
    mu_y = int(joints[joint_id][1] / feat_stride[1] + 0.5)
    ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
    br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
    if (ul[0] >= heatmap_size[0] or ul[1] >= heatmap_size[1] or br[0] < 0 or br[1] < 0):
      target_weight[joint_id] = 0
      continue
    size = 2 * tmp_size + 1
    x = np.arange(0, size, 1, np.float32)
    y = x[:, np.newaxis]
    x0 = y0 = size // 2
    g = np.exp(-((x - x0)**2 + (y - y0)**2) / (2 * sigma**2))
    g_x = max(0, -ul[0]), min(br[0], heatmap_size[0]) - ul[0]
    g_y = max(0, -ul[1]), min(br[1], heatmap_size[1]) - ul[1]
    img_x = max(0, ul[0]), min(br[0], heatmap_size[0])
    img_y = max(0, ul[1]), min(br[1], heatmap_size[1])
    if target_weight[joint_id] > 0.5:
      target[joint_id][img_y[0]:img_y[1], img_x[0]:img_x[1]] = \
          g[g_y[0]:g_y[1], g_x[0]:g_x[1]]
  return target, target_weight


def train_sample(image, joints, joints_vis, center, scale, rotation, flip, image_size,
                 heatmap_size, sigma, flip_pairs):
  """The official __getitem__ after the random draws (image RGB uint8)."""
  c = np.array(center, np.float64).copy()
  if flip:
    image = image[:, ::-1, :]
    joints, joints_vis = fliplr_joints(joints, joints_vis, image.shape[1], flip_pairs)
    c[0] = image.shape[1] - c[0] - 1
  trans = get_affine_transform(c, scale, rotation, image_size)
  warped = cv2.warpAffine(np.ascontiguousarray(image), trans,
                          (int(image_size[0]), int(image_size[1])), flags=cv2.INTER_LINEAR)
  joints = joints.copy()
  for i in range(joints.shape[0]):
    if joints_vis[i, 0] > 0.0:
      joints[i, 0:2] = affine_transform(joints[i, 0:2], trans)
  target, target_weight = generate_target(joints, joints_vis, image_size, heatmap_size, sigma)
  return trans, warped, joints, joints_vis, target, target_weight


def half_body_transform(joints, joints_vis, upper_body_ids, aspect_ratio, randn_draw):
  upper, lower = [], []
  for joint_id in range(joints.shape[0]):
    if joints_vis[joint_id][0] > 0:
      (upper if joint_id in upper_body_ids else lower).append(joints[joint_id])
  if randn_draw < 0.5 and len(upper) > 2:
    selected = upper
  else:
    selected = lower if len(lower) > 2 else upper
  if len(selected) < 2:
    return None, None
  selected = np.array(selected, dtype=np.float32)
  center = selected.mean(axis=0)[:2]
  left_top = np.amin(selected, axis=0)
  right_bottom = np.amax(selected, axis=0)
  w = right_bottom[0] - left_top[0]
  h = right_bottom[1] - left_top[1]
  if w > aspect_ratio * h:
    h = w * 1.0 / aspect_ratio
  elif w < aspect_ratio * h:
    w = h * aspect_ratio
  scale = np.array([w * 1.0 / 200, h * 1.0 / 200], dtype=np.float32) * 1.5
  return center, scale
