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


# --- lib/core/inference.py, lib/utils/transforms.py (flip_back), lib/nms/nms.py ---

def transform_preds(coords, center, scale, output_size):
  target_coords = np.zeros(coords.shape)
  trans = get_affine_transform(center, scale, 0, output_size, inv=1)
  for p in range(coords.shape[0]):
    target_coords[p, 0:2] = affine_transform(coords[p, 0:2], trans)
  return target_coords


def get_max_preds(batch_heatmaps):
  batch_size, num_joints, _, width = batch_heatmaps.shape
  heatmaps_reshaped = batch_heatmaps.reshape((batch_size, num_joints, -1))
  idx = np.argmax(heatmaps_reshaped, 2)
  maxvals = np.amax(heatmaps_reshaped, 2).reshape((batch_size, num_joints, 1))
  idx = idx.reshape((batch_size, num_joints, 1))
  preds = np.tile(idx, (1, 1, 2)).astype(np.float32)
  preds[:, :, 0] = (preds[:, :, 0]) % width
  preds[:, :, 1] = np.floor((preds[:, :, 1]) / width)
  pred_mask = np.tile(np.greater(maxvals, 0.0), (1, 1, 2)).astype(np.float32)
  return preds * pred_mask, maxvals


def get_final_preds(batch_heatmaps, center, scale, post_process=True):
  coords, maxvals = get_max_preds(batch_heatmaps)
  heatmap_height, heatmap_width = batch_heatmaps.shape[2], batch_heatmaps.shape[3]
  if post_process:
    for n in range(coords.shape[0]):
      for p in range(coords.shape[1]):
        hm = batch_heatmaps[n][p]
        px = int(np.floor(coords[n][p][0] + 0.5))
        py = int(np.floor(coords[n][p][1] + 0.5))
        if 1 < px < heatmap_width - 1 and 1 < py < heatmap_height - 1:
          diff = np.array([hm[py][px + 1] - hm[py][px - 1], hm[py + 1][px] - hm[py - 1][px]])
          coords[n][p] += np.sign(diff) * .25
  preds = coords.copy()
  for i in range(coords.shape[0]):
    preds[i] = transform_preds(coords[i], center[i], scale[i], [heatmap_width, heatmap_height])
  return preds, maxvals


def flip_back(output_flipped, matched_parts):
  output_flipped = output_flipped[:, :, :, ::-1].copy()
  for pair in matched_parts:
    tmp = output_flipped[:, pair[0], :, :].copy()
    output_flipped[:, pair[0], :, :] = output_flipped[:, pair[1], :, :]
    output_flipped[:, pair[1], :, :] = tmp
  return output_flipped


def dark_taylor(hm, coord):
  """The DARK authors' taylor() (np.matrix replaced by the same 2x2 algebra)."""
  heatmap_height, heatmap_width = hm.shape
  px, py = int(coord[0]), int(coord[1])
  if 1 < px < heatmap_width - 2 and 1 < py < heatmap_height - 2:
    dx = 0.5 * (hm[py][px + 1] - hm[py][px - 1])
    dy = 0.5 * (hm[py + 1][px] - hm[py - 1][px])
    dxx = 0.25 * (hm[py][px + 2] - 2 * hm[py][px] + hm[py][px - 2])
    dxy = 0.25 * (hm[py + 1][px + 1] - hm[py - 1][px + 1] - hm[py + 1][px - 1]
                  + hm[py - 1][px - 1])
    dyy = 0.25 * (hm[py + 2 * 1][px] - 2 * hm[py][px] + hm[py - 2 * 1][px])
    derivative = np.array([[dx], [dy]])
    hessian = np.array([[dxx, dxy], [dxy, dyy]])
    if dxx * dyy - dxy ** 2 != 0:
      offset = -np.linalg.inv(hessian) @ derivative
      coord = coord + offset[:, 0]
  return coord


def dark_gaussian_blur(hm, kernel):
  border = (kernel - 1) // 2
  batch_size, num_joints, height, width = hm.shape
  for i in range(batch_size):
    for j in range(num_joints):
      origin_max = np.max(hm[i, j])
      dr = np.zeros((height + 2 * border, width + 2 * border))
      dr[border: -border, border: -border] = hm[i, j].copy()
      dr = cv2.GaussianBlur(dr, (kernel, kernel), 0)
      hm[i, j] = dr[border: -border, border: -border].copy()
      hm[i, j] *= origin_max / np.max(hm[i, j])
  return hm


def dark_final_preds(hm, center, scale, blur_kernel=11):
  coords, maxvals = get_max_preds(hm)
  heatmap_height, heatmap_width = hm.shape[2], hm.shape[3]
  hm = dark_gaussian_blur(hm.astype(np.float64).copy(), blur_kernel)
  hm = np.log(np.maximum(hm, 1e-10))
  coords = coords.astype(np.float64)
  for n in range(coords.shape[0]):
    for p in range(coords.shape[1]):
      coords[n, p] = dark_taylor(hm[n][p], coords[n][p])
  preds = coords.copy()
  for i in range(coords.shape[0]):
    preds[i] = transform_preds(coords[i], center[i], scale[i], [heatmap_width, heatmap_height])
  return preds, maxvals


def oks_iou(g, d, a_g, a_d, sigmas=None, in_vis_thre=None):
  if not isinstance(sigmas, np.ndarray):
    sigmas = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87,
                       .87, .89, .89]) / 10.0
  variances = (sigmas * 2) ** 2
  xg, yg, vg = g[0::3], g[1::3], g[2::3]
  ious = np.zeros((d.shape[0]))
  for n_d in range(0, d.shape[0]):
    xd, yd, vd = d[n_d, 0::3], d[n_d, 1::3], d[n_d, 2::3]
    dx, dy = xd - xg, yd - yg
    e = (dx ** 2 + dy ** 2) / variances / ((a_g + a_d[n_d]) / 2 + np.spacing(1)) / 2
    if in_vis_thre is not None:
      ind = list(vg > in_vis_thre) and list(vd > in_vis_thre)
      e = e[ind]
    ious[n_d] = np.sum(np.exp(-e)) / e.shape[0] if e.shape[0] != 0 else 0.0
  return ious


def oks_nms(kpts, scores, areas, thresh, sigmas=None, in_vis_thre=None):
  kpts = kpts.reshape(len(kpts), -1)
  order = scores.argsort()[::-1]
  keep = []
  while order.size > 0:
    i = order[0]
    keep.append(i)
    oks_ovr = oks_iou(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]], sigmas, in_vis_thre)
    inds = np.where(oks_ovr <= thresh)[0]
    order = order[inds + 1]
  return keep


def soft_oks_nms(kpts, scores, areas, thresh, sigmas=None, in_vis_thre=None):
  kpts = kpts.reshape(len(kpts), -1)
  order = scores.argsort()[::-1]
  scores = scores[order]
  max_dets = 20
  keep = np.zeros(max_dets, dtype=np.intp)
  keep_cnt = 0
  while order.size > 0 and keep_cnt < max_dets:
    i = order[0]
    oks_ovr = oks_iou(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]], sigmas, in_vis_thre)
    order = order[1:]
    scores = scores[1:] * np.exp(-oks_ovr ** 2 / thresh)
    tmp = scores.argsort()[::-1]
    order = order[tmp]
    scores = scores[tmp]
    keep[keep_cnt] = i
    keep_cnt += 1
  return list(keep[:keep_cnt])


def mpii_evaluate(preds, gt_dict):
  """The official ``MPIIDataset.evaluate`` on a loaded gt_valid.mat (0-based preds)."""
  preds = preds[:, :, 0:2] + 1.0
  SC_BIAS = 0.6
  threshold = 0.5
  dataset_joints = gt_dict['dataset_joints']
  jnt_missing = gt_dict['jnt_missing']
  pos_gt_src = gt_dict['pos_gt_src']
  headboxes_src = gt_dict['headboxes_src']
  pos_pred_src = np.transpose(preds, [1, 2, 0])
  head = np.where(dataset_joints == 'head')[1][0]
  lsho = np.where(dataset_joints == 'lsho')[1][0]
  lelb = np.where(dataset_joints == 'lelb')[1][0]
  lwri = np.where(dataset_joints == 'lwri')[1][0]
  lhip = np.where(dataset_joints == 'lhip')[1][0]
  lkne = np.where(dataset_joints == 'lkne')[1][0]
  lank = np.where(dataset_joints == 'lank')[1][0]
  rsho = np.where(dataset_joints == 'rsho')[1][0]
  relb = np.where(dataset_joints == 'relb')[1][0]
  rwri = np.where(dataset_joints == 'rwri')[1][0]
  rkne = np.where(dataset_joints == 'rkne')[1][0]
  rank = np.where(dataset_joints == 'rank')[1][0]
  rhip = np.where(dataset_joints == 'rhip')[1][0]
  jnt_visible = 1 - jnt_missing
  uv_error = pos_pred_src - pos_gt_src
  uv_err = np.linalg.norm(uv_error, axis=1)
  headsizes = headboxes_src[1, :, :] - headboxes_src[0, :, :]
  headsizes = np.linalg.norm(headsizes, axis=0)
  headsizes *= SC_BIAS
  scale = np.multiply(headsizes, np.ones((len(uv_err), 1)))
  scaled_uv_err = np.divide(uv_err, scale)
  scaled_uv_err = np.multiply(scaled_uv_err, jnt_visible)
  jnt_count = np.sum(jnt_visible, axis=1)
  less_than_threshold = np.multiply((scaled_uv_err <= threshold), jnt_visible)
  PCKh = np.divide(100. * np.sum(less_than_threshold, axis=1), jnt_count)
  rng = np.arange(0, 0.5 + 0.01, 0.01)
  pckAll = np.zeros((len(rng), 16))
  for r in range(len(rng)):
    threshold = rng[r]
    less_than_threshold = np.multiply(scaled_uv_err <= threshold, jnt_visible)
    pckAll[r, :] = np.divide(100. * np.sum(less_than_threshold, axis=1), jnt_count)
  PCKh = np.ma.array(PCKh, mask=False)
  PCKh.mask[6:8] = True
  jnt_count = np.ma.array(jnt_count, mask=False)
  jnt_count.mask[6:8] = True
  jnt_ratio = jnt_count / np.sum(jnt_count).astype(np.float64)
  return [
      ('Head', PCKh[head]),
      ('Shoulder', 0.5 * (PCKh[lsho] + PCKh[rsho])),
      ('Elbow', 0.5 * (PCKh[lelb] + PCKh[relb])),
      ('Wrist', 0.5 * (PCKh[lwri] + PCKh[rwri])),
      ('Hip', 0.5 * (PCKh[lhip] + PCKh[rhip])),
      ('Knee', 0.5 * (PCKh[lkne] + PCKh[rkne])),
      ('Ankle', 0.5 * (PCKh[lank] + PCKh[rank])),
      ('Mean', np.sum(PCKh * jnt_ratio)),
      ('Mean@0.1', np.sum(pckAll[11, :] * jnt_ratio)),
  ]


def ae_single_tag_loss(pred_tag, joints, loss_type='exp'):
  """The official AELoss.singleTagLoss (HigherHRNet lib/core/loss.py), numpy; pred_tag (M, 1)."""
  tags = []
  pull = 0
  for joints_per_person in joints:
    tmp = []
    for joint in joints_per_person:
      if joint[1] > 0:
        tmp.append(pred_tag[joint[0]])
    if len(tmp) == 0:
      continue
    tmp = np.stack(tmp)
    tags.append(np.mean(tmp, axis=0))
    pull = pull + np.mean((tmp - tags[-1]) ** 2)
  num_tags = len(tags)
  if num_tags == 0:
    return 0.0, 0.0
  elif num_tags == 1:
    return 0.0, pull / num_tags
  tags = np.stack(tags)  # (T, 1)
  a = np.broadcast_to(tags.reshape(1, -1), (num_tags, num_tags))  # tags.expand(T, T)
  diff = a - a.T
  if loss_type == 'exp':
    push = np.exp(-diff ** 2).sum() - num_tags
  else:
    push = np.clip(1 - np.abs(diff), 0, None).sum() - num_tags
  return push / ((num_tags - 1) * num_tags) * 0.5, pull / num_tags


def bottom_up_heatmap_loss(pred, gt, mask):
  """The official HeatmapLoss, NCHW pred/gt and (N, H, W) mask: per-image mean."""
  loss = ((pred - gt) ** 2) * mask[:, None, :, :]
  return loss.mean(axis=3).mean(axis=2).mean(axis=1)


# --- HigherHRNet training data (lib/dataset/COCOKeypoints.py, transforms/, target_generators/)


def higher_get_mask(anns, height, width):
  """CocoKeypoints.get_mask: True where the loss counts."""
  from pycocotools import mask as mask_utils
  m = np.zeros((height, width))
  for obj in anns:
    if obj['iscrowd']:
      rle = mask_utils.frPyObjects(obj['segmentation'], height, width)
      m += mask_utils.decode(rle)
    elif obj['num_keypoints'] == 0:
      rles = mask_utils.frPyObjects(obj['segmentation'], height, width)
      for rle in rles:
        m += mask_utils.decode(rle)
  return m < 0.5


def higher_get_joints(anns, num_joints=17):
  """CocoKeypoints.get_joints over the kept annotations (iscrowd 0 or num_keypoints > 0)."""
  anns = [obj for obj in anns if obj['iscrowd'] == 0 or obj['num_keypoints'] > 0]
  joints = np.zeros((len(anns), num_joints, 3))
  for i, obj in enumerate(anns):
    joints[i, :num_joints, :3] = np.array(obj['keypoints']).reshape([-1, 3])
  return joints


def higher_affine_matrix(center, scale, res, rot=0):
  """RandomAffineTransform._get_affine_matrix (3x3)."""
  h = 200 * scale
  t = np.zeros((3, 3))
  t[0, 0] = float(res[1]) / h
  t[1, 1] = float(res[0]) / h
  t[0, 2] = res[1] * (-float(center[0]) / h + .5)
  t[1, 2] = res[0] * (-float(center[1]) / h + .5)
  t[2, 2] = 1
  if not rot == 0:
    rot = -rot
    rot_mat = np.zeros((3, 3))
    rot_rad = rot * np.pi / 180
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    rot_mat[0, :2] = [cs, -sn]
    rot_mat[1, :2] = [sn, cs]
    rot_mat[2, 2] = 1
    t_mat = np.eye(3)
    t_mat[0, 2] = -res[1] / 2
    t_mat[1, 2] = -res[0] / 2
    t_inv = t_mat.copy()
    t_inv[:2, 2] *= -1
    t = np.dot(t_inv, np.dot(rot_mat, np.dot(t_mat, t)))
  return t


def higher_random_affine(image, masks, joints, center, scale, rot, input_size, output_sizes):
  """RandomAffineTransform.__call__ after its draws (center already translated)."""
  import cv2
  masks, joints = list(masks), [j.copy() for j in joints]
  for i, size in enumerate(output_sizes):
    mat = higher_affine_matrix(center, scale, (size, size), rot)[:2]
    masks[i] = cv2.warpAffine((masks[i] * 255).astype(np.uint8), mat, (size, size)) / 255
    masks[i] = (masks[i] > 0.5).astype(np.float32)
    shape = joints[i][:, :, 0:2].shape
    pts = joints[i][:, :, 0:2].reshape(-1, 2)
    joints[i][:, :, 0:2] = np.dot(np.concatenate((pts, pts[:, 0:1] * 0 + 1), axis=1),
                                  mat.T).reshape(shape)
  mat = higher_affine_matrix(center, scale, (input_size, input_size), rot)[:2]
  image = cv2.warpAffine(image, mat, (input_size, input_size))
  return image, masks, joints


def higher_horizontal_flip(image, masks, joints, flip_index, output_sizes):
  """RandomHorizontalFlip.__call__ when the coin says flip."""
  image = image[:, ::-1] - np.zeros_like(image)
  masks, joints = list(masks), [j.copy() for j in joints]
  for i, size in enumerate(output_sizes):
    masks[i] = masks[i][:, ::-1] - np.zeros_like(masks[i])
    joints[i] = joints[i][:, flip_index]
    joints[i][:, :, 0] = size - joints[i][:, :, 0] - 1
  return image, masks, joints


def higher_heatmaps(joints, num_joints, output_res, sigma):
  """HeatmapGenerator.__call__: (K, H, W)."""
  size = 6 * sigma + 3
  x = np.arange(0, size, 1, float)
  y = x[:, np.newaxis]
  x0, y0 = 3 * sigma + 1, 3 * sigma + 1
  g = np.exp(- ((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma ** 2))
  hms = np.zeros((num_joints, output_res, output_res), dtype=np.float32)
  for p in joints:
    for idx, pt in enumerate(p):
      if pt[2] > 0:
        x, y = int(pt[0]), int(pt[1])
        if x < 0 or y < 0 or x >= output_res or y >= output_res:
          continue
        ul = int(np.round(x - 3 * sigma - 1)), int(np.round(y - 3 * sigma - 1))
        br = int(np.round(x + 3 * sigma + 2)), int(np.round(y + 3 * sigma + 2))
        c, d = max(0, -ul[0]), min(br[0], output_res) - ul[0]
        a, b = max(0, -ul[1]), min(br[1], output_res) - ul[1]
        cc, dd = max(0, ul[0]), min(br[0], output_res)
        aa, bb = max(0, ul[1]), min(br[1], output_res)
        hms[idx, aa:bb, cc:dd] = np.maximum(hms[idx, aa:bb, cc:dd], g[a:b, c:d])
  return hms


def higher_joints(joints, max_num_people, num_joints, output_res):
  """JointsGenerator.__call__ (tag per joint): (max_num_people, K, 2), packed per person."""
  visible_nodes = np.zeros((max_num_people, num_joints, 2))
  for i in range(len(joints)):
    tot = 0
    for idx, pt in enumerate(joints[i]):
      x, y = int(pt[0]), int(pt[1])
      if pt[2] > 0 and x >= 0 and y >= 0 and x < output_res and y < output_res:
        visible_nodes[i][tot] = (idx * output_res**2 + y * output_res + x, 1)
        tot += 1
  return visible_nodes
