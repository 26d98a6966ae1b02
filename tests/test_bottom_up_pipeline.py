"""Bottom-up training data against a transcription of the official CocoKeypoints chain.

A COCO-format folder with real JPEGs holds labelled people, a person without keypoints (a
polygon) and a crowd (an RLE), so the ignore mask has holes. Each tf.data sample is checked
against the official RandomAffineTransform, RandomHorizontalFlip, get_mask, HeatmapGenerator
and JointsGenerator run on the same random draws.
"""

import json
import os

import cv2
import numpy as np
from pycocotools import mask as mask_utils
import pytest
import tensorflow as tf

import official_reference as official
from hrnet_jax import keypoints as kp
from hrnet_jax import losses
from input_pipeline import bottom_up_pipeline, coco, pipeline

SPEC = bottom_up_pipeline.BottomUpSpec(input_size=64, num_joints=17,
                                       flip_pairs=kp.COCO_FLIP_PAIRS, max_num_people=6)


def person(rng, cx, cy, spread, labelled=12):
  keypoints = np.zeros((17, 3))
  keypoints[:, 0] = cx + rng.uniform(-spread, spread, 17)
  keypoints[:, 1] = cy + rng.uniform(-2 * spread, 2 * spread, 17)
  keypoints[:labelled, 2] = rng.choice([1, 2], labelled)
  keypoints[labelled:] = 0
  return [round(float(v), 2) for v in keypoints.reshape(-1)]


def uncompressed_rle(mask):
  """COCO's crowd segmentation: run lengths of the column-major mask, zeros first."""
  flat = np.concatenate([[0], mask.ravel(order='F'), [2]])
  starts = np.flatnonzero(flat[1:] != flat[:-1])
  return {'counts': np.diff(np.concatenate([[0], starts])).tolist(), 'size': list(mask.shape)}


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """Two images (120x90 and 80x140), people, an unlabelled person and a crowd region."""
  root = str(tmp_path_factory.mktemp('bottom_up_coco'))
  os.makedirs(os.path.join(root, 'train'))
  rng = np.random.default_rng(0)
  images, anns = [], []
  for image_id, (h, w) in ((7, (90, 120)), (3, (140, 80))):
    pixels = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)), (0, 0), 2).astype(np.uint8)
    cv2.imwrite(os.path.join(root, 'train', f'{image_id}.jpg'), pixels)
    images.append({'id': image_id, 'file_name': f'{image_id}.jpg', 'height': h, 'width': w})
    for i, (cx, cy) in enumerate([(w * 0.3, h * 0.5), (w * 0.7, h * 0.45)]):
      anns.append({'id': len(anns) + 1, 'image_id': image_id, 'category_id': 1, 'iscrowd': 0,
                   'keypoints': person(rng, cx, cy, w * 0.12, 17 - 5 * i),
                   'num_keypoints': 17 - 5 * i, 'bbox': [0, 0, 1, 1], 'area': 1.0})
    anns.append({'id': len(anns) + 1, 'image_id': image_id, 'category_id': 1, 'iscrowd': 0,
                 'keypoints': [0] * 51, 'num_keypoints': 0, 'bbox': [5, 5, 20, 15],
                 'area': 300.0, 'segmentation': [[5, 5, 25, 5, 25, 20, 5, 20]]})
    crowd = np.zeros((h, w), np.uint8, order='F')
    crowd[h - 30:h - 10, w - 40:w - 5] = 1
    anns.append({'id': len(anns) + 1, 'image_id': image_id, 'category_id': 1, 'iscrowd': 1,
                 'keypoints': [0] * 51, 'num_keypoints': 0, 'bbox': [w - 40, h - 30, 35, 20],
                 'area': 700.0, 'segmentation': uncompressed_rle(crowd)})
  images.append({'id': 11, 'file_name': 'none.jpg', 'height': 10, 'width': 10})  # no people
  cv2.imwrite(os.path.join(root, 'train', 'none.jpg'), np.zeros((10, 10, 3), np.uint8))
  os.makedirs(os.path.join(root, 'annotations'))
  with open(coco.annotation_path(root, 'train'), 'w') as f:
    json.dump({'images': images, 'annotations': anns, 'categories': []}, f)
  return root, anns


def test_people_images_keep_labelled_people_and_ignore_regions(folder):
  root, anns = folder
  images = coco.load_people_images(root, 'train')
  assert list(images.image_ids) == [3, 7]  # sorted by id; the image without people dropped
  assert images.sizes.tolist() == [[140, 80], [90, 120]]
  for i, image_id in enumerate(images.image_ids):
    mine = [a for a in anns if a['image_id'] == image_id]
    np.testing.assert_array_equal(images.joints[i], official.higher_get_joints(mine)[:2])
    h, w = images.sizes[i]
    keep = bottom_up_pipeline.ignore_mask(images.ignore[i], h, w)
    np.testing.assert_array_equal(keep, official.higher_get_mask(mine, h, w))
    # The polygon (5..25 x 5..20) and the crowd box (35 x 20) are the holes.
    assert (~keep).sum() == pytest.approx(21 * 16 + 35 * 20, abs=60)
    assert not keep[10, 10] and not keep[h - 20, w - 20] and keep[h // 2, w // 2]
  crowd = anns[3]['segmentation']
  compressed = mask_utils.frPyObjects(crowd, *crowd['size'])
  compressed['counts'] = compressed['counts'].decode()  # as a JSON file holds it
  np.testing.assert_array_equal(bottom_up_pipeline.ignore_mask([compressed], 90, 120),
                                bottom_up_pipeline.ignore_mask([crowd], 90, 120))


def test_people_images_errors_name_the_annotation(folder, tmp_path):
  root, anns = folder
  bad = [dict(a) for a in anns]
  del bad[2]['segmentation'], bad[2]['bbox']
  os.makedirs(tmp_path / 'annotations')
  os.symlink(os.path.join(root, 'train'), tmp_path / 'train')
  with open(coco.annotation_path(str(tmp_path), 'train'), 'w') as f:
    json.dump({'images': [{'id': 7, 'file_name': '7.jpg', 'height': 90, 'width': 120}],
               'annotations': bad[:4]}, f)
  with pytest.raises(coco.DatasetError, match='annotation 3 .*"segmentation" or "bbox"'):
    coco.load_people_images(str(tmp_path), 'train')
  bad[2]['bbox'] = [5, 5, 20, 15]  # no segmentation: its box is ignored instead
  with open(coco.annotation_path(str(tmp_path), 'train'), 'w') as f:
    json.dump({'images': [{'id': 7, 'file_name': '7.jpg', 'height': 90, 'width': 120}],
               'annotations': bad[:4]}, f)
  ignore = coco.load_people_images(str(tmp_path), 'train').ignore[0]
  assert ignore[0] == [[5, 5, 25, 5, 25, 20, 5, 20]]  # the box, as a polygon
  with pytest.raises(coco.DatasetError, match='dataset folder not found'):
    coco.load_people_images(str(tmp_path / 'missing'), 'train')


def official_sample(contents, joints, anns, seed, spec):
  """The official chain on the officially read image with the pipeline's own draws."""
  image = cv2.cvtColor(cv2.imdecode(np.frombuffer(contents.numpy(), np.uint8),
                                    cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION),
                       cv2.COLOR_BGR2RGB)
  h, w = image.shape[:2]
  center, scale, rotation, flip = (np.asarray(v) for v in bottom_up_pipeline.augment_params(
      h, w, tf.constant(seed, tf.int64), spec))
  keep = official.higher_get_mask(anns, h, w)
  sizes = spec.output_sizes
  image, masks, joint_list = official.higher_random_affine(
      image, [keep, keep], [joints, joints], center, float(scale), float(rotation),
      spec.input_size, sizes)
  if flip:
    perm = kp.flip_permutation(17, spec.flip_pairs)
    image, masks, joint_list = official.higher_horizontal_flip(image, masks, joint_list,
                                                               perm, sizes)
  heatmaps = [official.higher_heatmaps(j, 17, s, spec.sigma).transpose(1, 2, 0)
              for j, s in zip(joint_list, sizes)]
  tags = official.higher_joints(joint_list[0], spec.max_num_people, 17, sizes[0])
  return image, masks, heatmaps, tags, bool(flip)


@pytest.mark.parametrize('flip_prob', [0.0, 1.0])
def test_samples_equal_the_official_transforms_and_targets(folder, flip_prob):
  """Image to 1 grey level (cv2 rounding), masks and joint locations exactly, heatmaps 1e-6."""
  root, anns = folder
  spec = bottom_up_pipeline.BottomUpSpec(**{**SPEC.__dict__, 'flip_prob': flip_prob})
  images = coco.load_people_images(root, 'train')
  ds = bottom_up_pipeline.train_dataset(images, spec, 2, seed=5, start_step=0)
  rotated = 0
  for batch in ds.take(2).as_numpy_iterator():
    for row in range(2):
      index, position = int(batch['index'][row]), int(batch['position'][row])
      mine = [a for a in anns if a['image_id'] == images.image_ids[index]]
      contents = tf.io.read_file(images.image_paths[index])
      image, masks, heatmaps, tags, flipped = official_sample(
          contents, official.higher_get_joints(mine), mine, [5, position], spec)
      assert flipped == bool(flip_prob)
      pixels = batch['image'][row] * np.array(pipeline.transforms.IMAGENET_STD) * 255 + (
          np.array(pipeline.transforms.IMAGENET_MEAN) * 255)
      difference = np.abs(pixels - image)
      assert difference.max() <= 1.01 and difference.mean() < 0.05
      np.testing.assert_array_equal(batch['mask_quarter'][row], masks[0])
      np.testing.assert_array_equal(batch['mask_half'][row], masks[1])
      assert 0 < masks[1].mean() < 1
      np.testing.assert_allclose(batch['heatmaps_quarter'][row], heatmaps[0], rtol=0, atol=1e-6)
      np.testing.assert_allclose(batch['heatmaps_half'][row], heatmaps[1], rtol=0, atol=1e-6)
      assert heatmaps[1].max() == 1.0
      # The official packs each person's joints to the front; ours keeps joint k at row k.
      # The same locations per person, so the same tag loss.
      ours, theirs = batch['tag_locations'][row], tags
      for p in range(spec.max_num_people):
        assert (sorted(map(tuple, ours[p][ours[p, :, 1] > 0])) ==
                sorted(map(tuple, theirs[p][theirs[p, :, 1] > 0].astype(np.int64))))
      tag_maps = np.random.default_rng(position).normal(size=(1, *heatmaps[0].shape))
      flat = tag_maps[0].transpose(2, 0, 1).reshape(-1, 1)
      expected = official.ae_single_tag_loss(flat, theirs.astype(np.int64))
      got = losses.associative_embedding_loss(tag_maps.astype(np.float32), ours[None])
      np.testing.assert_allclose(np.ravel(got), expected, rtol=1e-5)
      assert expected[0] > 0 and expected[1] > 0
      rotated += abs(float(bottom_up_pipeline.augment_params(
          *images.sizes[index], tf.constant([5, position], tf.int64), spec)[2])) > 1
  assert rotated >= 2  # the draws did rotate
