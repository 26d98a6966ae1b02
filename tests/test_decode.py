"""Images read as the official code reads them, in training, evaluation and the demo alike.

The official read is ``cv2.imread(path, IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION)`` converted
to RGB. Checked on real COCO photos (tests/fixtures/real_data/coco), on small images of the
kinds pillow and cv2 write (grayscale, CMYK, alpha, 16-bit, palette, BMP, TIFF), on unreadable
files, on a COCO folder of PNGs through both training pipelines and the evaluation pipeline,
and on an EXIF-rotated JPEG through the evaluation and the demo.
"""

import glob
import io
import json
import os
import shutil

import cv2
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from conftest import FIXTURES, random_variables
from hrnet_jax import config_lib, errors, media, sharding, tasks
from input_pipeline import coco, pipeline, transforms
import tiny_config

REAL_PHOTOS = sorted(glob.glob(os.path.join(FIXTURES, 'real_data', 'coco', '*.jpg')))
# The acceptance tolerance against cv2 on real photos: 1 grey level on every pixel.
GREY_LEVELS = 1
OFFICIAL_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
SIZE = (96, 128)  # (width, height) of the warps


def official_rgb(data: bytes) -> np.ndarray:
  """The official read of encoded bytes: cv2's colour decode, EXIF ignored, as RGB."""
  return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), OFFICIAL_FLAGS),
                      cv2.COLOR_BGR2RGB)


def read_bytes(path) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


def matrices(width: int, height: int, count: int = 4, seed: int = 0):
  """Affine matrices of random boxes (rotated, zoomed, some partly outside the image)."""
  rng = np.random.default_rng(seed)
  for _ in range(count):
    center = rng.uniform([-0.1 * width, -0.1 * height], [1.1 * width, 1.1 * height])
    scale = rng.uniform(0.1, 1.5) * max(width, height) / 200 * np.array([1.0, 4 / 3])
    yield transforms.affine_matrix(center, scale, rng.uniform(-60, 60), SIZE)


def test_the_real_photos_are_there():
  assert len(REAL_PHOTOS) >= 4, REAL_PHOTOS


@pytest.mark.parametrize('path', REAL_PHOTOS, ids=os.path.basename)
def test_decode_image_is_cv2_on_real_photos(path):
  data = read_bytes(path)
  ours, official = transforms.decode_image(data), official_rgb(data)
  assert ours.dtype == np.uint8 and ours.shape == official.shape
  assert np.abs(ours.astype(np.int32) - official).max() <= GREY_LEVELS  # measured: 0
  np.testing.assert_array_equal(pipeline.read_rgb(path), ours)
  np.testing.assert_array_equal(tasks.read_rgb(path), ours)


def test_windowed_decode_warps_the_pixels_of_the_whole_decode():
  """Training and evaluation decode only the window a warp reads: the same warped image."""
  for path in REAL_PHOTOS[:2]:
    data = read_bytes(path)
    whole = transforms.decode_image(data)
    for matrix in matrices(whole.shape[1], whole.shape[0]):
      np.testing.assert_array_equal(transforms.warp_encoded(data, matrix, SIZE),
                                    transforms.warp_image(whole, matrix, SIZE))


def smooth_rgb(height=70, width=90, seed=0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 1.5)


def pillow(image: Image.Image, image_format: str, **options) -> bytes:
  out = io.BytesIO()
  image.save(out, image_format, **options)
  return out.getvalue()


def cv2_encoded(extension: str, image: np.ndarray) -> bytes:
  ok, data = cv2.imencode(extension, image)
  assert ok
  return data.tobytes()


def kinds() -> dict[str, bytes]:
  """Small encoded images of the kinds a COCO-format folder may hold."""
  rgb = smooth_rgb()
  grey = rgb[..., 0]
  rgba = np.concatenate([rgb, rgb[..., :1]], axis=-1)
  low_bytes = np.random.default_rng(1).integers(0, 256, rgb.shape)  # cv2 drops them
  deep = (rgb.astype(np.uint16) * 256 + low_bytes).astype(np.uint16)
  return {
      'rgb_jpeg': pillow(Image.fromarray(rgb), 'JPEG', quality=90),
      'grey_jpeg': pillow(Image.fromarray(grey), 'JPEG', quality=90),
      'cmyk_jpeg': pillow(Image.fromarray(rgb).convert('CMYK'), 'JPEG', quality=90),
      'progressive_jpeg': pillow(Image.fromarray(rgb), 'JPEG', quality=90, progressive=True),
      'rgb_png': pillow(Image.fromarray(rgb), 'PNG'),
      'rgba_png': pillow(Image.fromarray(rgba, 'RGBA'), 'PNG'),
      'grey_alpha_png': pillow(Image.fromarray(rgba[..., 2:]).convert('LA'), 'PNG'),
      'palette_png': pillow(Image.fromarray(rgb).convert('P', palette=Image.Palette.ADAPTIVE),
                            'PNG'),
      'grey16_png': cv2_encoded('.png', deep[..., 0]),
      'rgb16_png': cv2_encoded('.png', deep),
      'rgb_bmp': pillow(Image.fromarray(rgb), 'BMP'),
      'palette_bmp': pillow(Image.fromarray(rgb).convert('P', palette=Image.Palette.ADAPTIVE),
                            'BMP'),
      'tiff': pillow(Image.fromarray(rgb), 'TIFF'),
  }


@pytest.mark.parametrize('kind', sorted(kinds()))
def test_every_kind_of_image_decodes_and_warps_as_cv2(kind):
  data = kinds()[kind]
  official = official_rgb(data)
  ours = transforms.decode_image(data)
  assert ours.dtype == np.uint8 and ours.shape == official.shape == (70, 90, 3)
  np.testing.assert_array_equal(ours, official)
  for matrix in matrices(90, 70, count=2):
    np.testing.assert_array_equal(transforms.warp_encoded(data, matrix, SIZE),
                                  transforms.warp_image(official, matrix, SIZE))


def truncated_png() -> bytes:
  return kinds()['rgb_png'][:200]


@pytest.mark.parametrize('data', [b'', b'not an image at all', truncated_png(),
                                  kinds()['rgb_jpeg'][:300]],
                         ids=['empty', 'text', 'truncated_png', 'truncated_jpeg'])
def test_an_unreadable_file_is_an_error_naming_it(tmp_path, data):
  path = str(tmp_path / 'broken.png')
  with open(path, 'wb') as f:
    f.write(data)
  with pytest.raises(pipeline.DataError, match='broken.png: cannot read or decode'):
    pipeline.read_rgb(path)
  assert [p for p, _ in pipeline.find_bad_images([path, REAL_PHOTOS[0]])] == [path]
  # Inside tf.data, an error that TrainIterator diagnoses (naming the files of the step).
  matrix = next(matrices(90, 70))
  ds = tf.data.Dataset.from_tensors(data).map(lambda c: transforms.warp_encoded(c, matrix, SIZE))
  with pytest.raises(tf.errors.InvalidArgumentError):
    next(iter(ds))
  with pytest.raises(pipeline.DataError, match='nowhere.jpg'):
    pipeline.read_rgb(str(tmp_path / 'nowhere.jpg'))


def test_color_rgb_is_gone_and_old_run_configs_still_load(tmp_path):
  """Models read RGB everywhere. A run saved with ``dataset.color_rgb`` (which only the demo
  and bottom-up evaluation honoured; training always read RGB) loads, and the key is
  ignored."""
  config = tiny_config.get_config()
  assert 'color_rgb' not in config.dataset
  with pytest.raises(errors.ConfigError, match='does not exist'):
    config_lib.override(config, {'dataset.color_rgb': False})
  saved = config.to_dict()
  saved['dataset']['color_rgb'] = False
  with open(tmp_path / config_lib.CONFIG_FILE, 'w') as f:
    json.dump(saved, f)
  loaded = config_lib.load_saved_config(str(tmp_path))
  image = smooth_rgb()
  predictor = tasks.get_task(loaded).predictor_class(loaded, {})
  np.testing.assert_array_equal(predictor.model_input(image), image)


# ------------------------------------------------------------------ a folder of PNGs ---


@pytest.fixture(scope='module')
def png_folder(synthetic_folder, tmp_path_factory):
  """The synthetic set with each image stored as a PNG of the pixels its JPEG decodes to."""
  root = str(tmp_path_factory.mktemp('png_coco'))
  for split in ('train', 'val'):
    annotations = coco.read_json(coco.annotation_path(synthetic_folder, split))
    os.makedirs(os.path.join(root, split))
    for image in annotations['images']:
      rgb = pipeline.read_rgb(os.path.join(synthetic_folder, split, image['file_name']))
      image['file_name'] = os.path.splitext(image['file_name'])[0] + '.png'
      assert cv2.imwrite(os.path.join(root, split, image['file_name']), rgb[..., ::-1])
    coco.write_json(coco.annotation_path(root, split), annotations)
  return root


def folder_config(config, root: str):
  return config_lib.override(config, {'dataset.root': root, 'dataset.train_split': 'train',
                                      'dataset.val_split': 'val'})


def first_training_batch(config) -> dict:
  """The first training batch of a config, as launch/train.py reads it."""
  iterator = tasks.get_task(config).training_data().open(0, 0, 1)
  batch = next(iterator)
  iterator.close()
  return batch


def first_eval_batch(config) -> dict:
  """The first batch of person crops of a top-down config's val split."""
  return next(tasks.eval_dataset(config)[0].as_numpy_iterator())


def assert_same(a: dict, b: dict):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_png_folder_trains_and_evaluates_with_the_pixels_of_its_jpegs(synthetic_folder,
                                                                         png_folder):
  """Top-down training and evaluation batches and bottom-up training batches of the PNG
  folder equal those of the JPEG folder (whole PNG decode vs windowed JPEG decode)."""
  top_down = tiny_config.get_config()
  png, jpeg = folder_config(top_down, png_folder), folder_config(top_down, synthetic_folder)
  assert_same(first_training_batch(png), first_training_batch(jpeg))
  assert_same(first_eval_batch(png), first_eval_batch(jpeg))
  bottom_up = config_lib.bottomup_config(width=4, input_size=64, batch_size=4)
  assert_same(first_training_batch(folder_config(bottom_up, png_folder)),
              first_training_batch(folder_config(bottom_up, synthetic_folder)))
  name = coco.read_json(coco.annotation_path(png_folder, 'val'))['images'][0]['file_name']
  np.testing.assert_array_equal(  # bottom-up evaluation and the demo read with read_rgb
      tasks.read_rgb(os.path.join(png_folder, 'val', name)),
      tasks.read_rgb(os.path.join(synthetic_folder, 'val', name[:-4] + '.jpg')))


def test_a_bad_png_stops_training_naming_it_or_is_skipped(png_folder, tmp_path):
  root = str(tmp_path / 'png_coco')
  shutil.copytree(png_folder, root)
  config = folder_config(tiny_config.get_config(), root)
  iterator = tasks.get_task(config).training_data().open(0, 0, 1)
  bad = iterator.instances.image_paths[int(iterator.step_indices(0)[2])]
  iterator.close()
  with open(bad, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n not the rest of a PNG')
  iterator = tasks.get_task(config).training_data().open(0, 0, 1)
  with pytest.raises(pipeline.DataError, match=f'{os.path.basename(bad)}: not an image'):
    next(iterator)
  iterator.close()
  skipping = config_lib.override(config, {'dataset.skip_bad_images': True})
  iterator = tasks.get_task(skipping).training_data().open(0, 0, 1)
  assert len(next(iterator)['image']) == config.batch_size and iterator.skipped >= 1
  iterator.close()


# --------------------------------------------------------------------------- EXIF ---


def write_exif_rotated_folder(root: str, rgb: np.ndarray, box) -> tuple[str, str]:
  """A COCO val folder of one JPEG with EXIF orientation 6 (shown rotated by 90 degrees), one
  labelled person, and ``box`` as a detection. Returns the image and detections paths."""
  height, width = rgb.shape[:2]
  os.makedirs(os.path.join(root, 'val'))
  path = os.path.join(root, 'val', '000000000001.jpg')
  exif = Image.Exif()
  exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
  Image.fromarray(rgb).save(path, 'JPEG', quality=92, exif=exif)
  x, y, w, h = box
  keypoints = np.stack([np.linspace(x + 5, x + w - 5, 17), np.linspace(y + 5, y + h - 5, 17),
                        np.full(17, 2.0)], axis=1)
  coco.write_json(coco.annotation_path(root, 'val'), {
      'images': [{'id': 1, 'file_name': os.path.basename(path), 'height': height,
                  'width': width}],
      'annotations': [{'id': 1, 'image_id': 1, 'category_id': 1, 'iscrowd': 0, 'bbox': box,
                       'area': w * h, 'num_keypoints': 17,
                       'keypoints': keypoints.reshape(-1).tolist()}],
      'categories': [{'id': 1, 'name': 'person'}]})
  detections = os.path.join(root, 'detections.json')
  with open(detections, 'w') as f:
    json.dump([{'image_id': 1, 'category_id': 1, 'bbox': box, 'score': 0.9}], f)
  return path, detections


def test_an_exif_rotated_jpeg_gives_the_same_keypoints_in_eval_and_the_demo(tmp_path):
  rgb = official_rgb(read_bytes(REAL_PHOTOS[0]))[100:220, 150:350]  # 120 x 200, not square
  box = [40.0, 10.0, 80.0, 100.0]
  path, detections = write_exif_rotated_folder(str(tmp_path / 'exif'), rgb, box)
  stored = official_rgb(read_bytes(path))  # the official read: EXIF ignored
  assert stored.shape == (120, 200, 3)
  assert cv2.imread(path, cv2.IMREAD_COLOR).shape == (200, 120, 3)  # cv2 would rotate it

  # The demo's reading (media.open_input's frames, then BGR -> RGB for the predictor).
  source = media.open_input(path)
  frame, = list(source)
  image = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
  assert source.kind == 'image'
  np.testing.assert_array_equal(image, transforms.decode_image(read_bytes(path)))
  assert np.abs(image.astype(np.int32) - stored).max() <= GREY_LEVELS

  config = tiny_config.get_config()
  config = config_lib.override(config, {
      'dataset.root': str(tmp_path / 'exif'), 'dataset.val_split': 'val',
      'test.use_gt_bbox': False, 'test.bbox_file': detections, 'test.flip_test': False})
  variables = random_variables(config.model, seed=3)
  mesh = sharding.data_mesh()
  task = tasks.get_task(config)
  evaluated = task.val_source(mesh).crop_keypoints(variables)  # what launch/eval.py predicts
  people, = task.predictor(variables, mesh)([image], [[box]], [[0.9]])  # launch/demo.py
  np.testing.assert_allclose(people.keypoints, evaluated['keypoints'][..., :2], rtol=0,
                             atol=1e-3)  # measured: equal
  scores = evaluated['keypoints'][..., 2]  # float32 sums of a random network: ~1e-6 noise
  np.testing.assert_allclose(people.joint_scores, scores, rtol=0,
                             atol=1e-5 * np.abs(scores).max())
