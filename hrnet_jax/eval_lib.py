"""The evaluation jobs: predictions over a val split, COCO results, COCOeval metrics.

Used by ``launch/eval.py`` and by the periodic evaluation of ``train_lib.train_and_evaluate``
(``make_evaluator`` picks the job of the config's model). Top-down: the forward pass, flip
test and heatmap decoding run under one ``jax.jit`` over the data mesh; the map to image
pixels, rescoring, OKS NMS and COCOeval run on the host in float64, as the official code.
Bottom-up: ``BottomUpEvaluator``, one whole image at a time (``bottom_up.BottomUpPredictor``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterable

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf

from hrnet_jax import decode, evaluation, models, sharding
from hrnet_jax import keypoints as kp

EVAL_DIR = 'eval'
_BATCH_KEYS = ('image', 'center', 'scale', 'score', 'image_id', 'mask')


def make_predict_fn(config: ml_collections.ConfigDict,
                    mesh: jax.sharding.Mesh) -> Callable[[Any, dict], dict]:
  """A jitted (variables, global batch) -> heatmap coordinates, maxvals and the batch's boxes.

  The outputs are replicated, so every process can read all of them. With the DARK decoder
  the merged heatmaps come back too (DARK runs on the host, as its authors' code).
  """
  model = models.create_model(config.model)
  test = config.test
  decode.check_decoder(test.decoder)
  pairs = kp.skeleton_for(config.model.num_joints)['flip_pairs'] if test.flip_test else ()

  def predict(variables, batch):
    heatmaps = model.apply(variables, batch['image'], train=False).astype(jnp.float32)
    if test.flip_test:
      flipped = model.apply(variables, batch['image'][:, :, ::-1], train=False)
      heatmaps = decode.merge_flip_test(heatmaps, flipped.astype(jnp.float32), pairs,
                                        shift=test.shift_heatmap)
    coords, maxvals = decode.heatmap_coordinates(
        heatmaps, test.post_process and test.decoder == 'official')
    out = {k: batch[k] for k in _BATCH_KEYS if k != 'image'}
    out.update(coords=coords, maxvals=maxvals)
    if test.decoder == 'dark':
      out['heatmaps'] = heatmaps
    return out

  return jax.jit(predict, in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=sharding.replicated(mesh))


def predict_keypoints(config: ml_collections.ConfigDict, variables: Any,
                      batches: Iterable[dict[str, np.ndarray]], mesh: jax.sharding.Mesh,
                      predict: Callable[[Any, dict], dict] | None = None
                      ) -> dict[str, np.ndarray]:
  """Image-pixel keypoints (N, K, 3: x, y, maxval) with center, scale, score and image_id.

  ``batches`` are this process's shares of ``pipeline.eval_dataset`` batches; padded rows
  (mask 0) are dropped. ``predict`` is ``make_predict_fn(config, mesh)``, made if not given.
  """
  predict = predict or make_predict_fn(config, mesh)
  parts = []
  for local in batches:
    local = dict(local, image_id=_as_int32(local['image_id']))
    out = predict(variables, sharding.global_batch({k: local[k] for k in _BATCH_KEYS}, mesh))
    out = jax.tree.map(np.asarray, out)
    keep = out['mask'] > 0
    parts.append({'keypoints': image_keypoints(config, out)[keep],
                  'center': out['center'][keep], 'scale': out['scale'][keep],
                  'score': out['score'][keep], 'image_id': out['image_id'][keep]})
  if not parts:
    raise ValueError('the evaluation set is empty: no person boxes to evaluate')
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def image_keypoints(config: ml_collections.ConfigDict, out: dict[str, np.ndarray]) -> np.ndarray:
  """(N, K, 3) image x, y (float64) and maxval of a ``make_predict_fn`` output (DARK here)."""
  coords = out['coords']
  if config.test.decoder == 'dark':
    coords = decode.dark_coordinates(out['heatmaps'], coords)
  xy = decode.to_image_coordinates(coords, out['center'], out['scale'],
                                   config.dataset.heatmap_size)
  return np.concatenate([xy, out['maxvals'][..., None].astype(np.float64)], axis=-1)


def _as_int32(ids: np.ndarray) -> np.ndarray:
  if ids.size and (ids.max() > np.iinfo(np.int32).max or ids.min() < 0):
    raise ValueError(f'image ids must lie in [0, 2^31) to travel through the devices; got '
                     f'{ids.min()} .. {ids.max()}')
  return ids.astype(np.int32)


def eval_dataset(config: ml_collections.ConfigDict) -> tuple[tf.data.Dataset, str, int]:
  """This process's eval batches of the config's val split, its annotation file, and N.

  Boxes are the ground truth (``test.use_gt_bbox``) or the detections of ``test.bbox_file``
  above ``test.image_thre``, as the official recipe.
  """
  from input_pipeline import coco, datasets, pipeline, tfds_source  # TF-side code
  d, test = config.dataset, config.test
  spec = pipeline.SampleSpec.from_config(config)
  where = dict(process_index=jax.process_index(), process_count=jax.process_count())
  if d.source == 'tfds':
    if not test.use_gt_bbox:
      raise ValueError('config.test.use_gt_bbox=False (detection boxes) needs the image files: '
                       "use config.dataset.source='folder' for evaluation with detections")
    builder = tfds_source.load_builder(d.tfds_data_dir)
    tfds_source._check_split(builder, d.val_split)
    n = int(tfds_source.people_per_example(builder)[d.val_split].sum())
    ds = tfds_source.eval_dataset(d.tfds_data_dir, d.val_split, spec, test.batch_size, **where)
    return ds, coco.annotation_path(d.root, d.val_split), n
  root = datasets.dataset_root(config)
  if test.use_gt_bbox:
    instances = coco.load_ground_truth(root, d.val_split, aspect_ratio=spec.aspect_ratio,
                                       num_joints=config.model.num_joints,
                                       padding=d.box_padding)
  else:
    bbox_file = test.bbox_file if os.path.isabs(test.bbox_file) else os.path.join(
        root, test.bbox_file)
    instances = coco.load_detections(bbox_file, root, d.val_split,
                                     aspect_ratio=spec.aspect_ratio,
                                     num_joints=config.model.num_joints,
                                     score_threshold=test.image_thre, padding=d.box_padding)
  ds = pipeline.eval_dataset(instances, spec, test.batch_size, **where)
  return ds, coco.annotation_path(root, d.val_split), len(instances)


def _write_json(path: str, value: Any) -> None:
  """Writes JSON through a temporary file, so a crash never leaves a half-written file."""
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path + '.tmp', 'w') as f:
    json.dump(value, f)
  tf.io.gfile.rename(path + '.tmp', path, overwrite=True)


class Evaluator:
  """The eval job of one config, built once (boxes read, predict step compiled on first use)."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None):
    models.require_top_down(config.model, 'The evaluator (launch/eval.py)')
    self.config, self.mesh = config, mesh or sharding.data_mesh()
    sharding.check_batch_size(config.test.batch_size)
    self.dataset, self.annotation_file, self.num_boxes = eval_dataset(config)
    if not tf.io.gfile.exists(self.annotation_file):
      raise FileNotFoundError(f'{self.annotation_file} not found: COCOeval needs the val '
                              f'annotations (config.dataset.root)')
    self.predict = make_predict_fn(config, self.mesh)

  def evaluate(self, variables: Any, workdir: str, *, step: int, writer=None,
               verbose: bool = True) -> dict[str, float]:
    """Predicts the val split, writes COCO results and metrics under ``workdir/eval``.

    Files: ``<split>_keypoints_results.json`` (COCO results format) and
    ``<split>_metrics.json`` (AP, AP50, ..., ARL from pycocotools COCOeval). ``writer`` (a
    tf.summary writer) gets ``eval/<metric>`` scalars at ``step``. Returns the metrics on
    every process.
    """
    start = time.time()
    predictions = predict_keypoints(self.config, variables, self.dataset.as_numpy_iterator(),
                                    self.mesh, self.predict)
    seconds = time.time() - start
    return score_predictions(self.config, predictions, self.annotation_file, workdir, step=step,
                             writer=writer, verbose=verbose,
                             note=f'{self.num_boxes} boxes, predicted in {seconds:.1f} s')


def score_predictions(config: ml_collections.ConfigDict, predictions: dict[str, np.ndarray],
                      annotation_file: str, workdir: str, *, step: int, writer=None,
                      verbose: bool = True, note: str = '') -> dict[str, float]:
  """Rescoring, OKS NMS, the results file, COCOeval and the metrics file, as the official.

  ``predictions`` holds ``predict_keypoints``' arrays: keypoints (N, K, 3), center, scale,
  score and image_id.
  """
  start = time.time()
  test = config.test
  results = evaluation.keypoint_results(
      predictions['keypoints'], predictions['score'], predictions['image_id'],
      predictions['center'], predictions['scale'], in_vis_thre=test.in_vis_thre,
      oks_thre=test.oks_thre, soft_nms=test.soft_nms)
  return report(config, results, annotation_file, workdir, step=step, writer=writer,
                verbose=verbose, note=note, start=start, what='people after OKS NMS')


def report(config: ml_collections.ConfigDict, results: list[dict], annotation_file: str,
           workdir: str, *, step: int, writer=None, verbose: bool = True, note: str = '',
           start: float | None = None, what: str = 'people') -> dict[str, float]:
  """COCOeval of COCO keypoint ``results``; writes the results and metrics files.

  No results at all (an untrained model) scores 0 on every metric.
  """
  start = time.time() if start is None else start
  split = config.dataset.val_split
  # Every process scores the same predictions (replicated), so all agree on the metrics.
  if results:
    metrics, table = evaluation.coco_keypoint_eval(annotation_file, results)
  else:
    metrics, table = dict.fromkeys(evaluation.METRIC_NAMES, 0.0), '(no people found: 0)'
  out_dir = os.path.join(os.path.abspath(workdir), EVAL_DIR)
  if jax.process_index() == 0:
    _write_json(os.path.join(out_dir, f'{split}_keypoints_results.json'), results)
    _write_json(os.path.join(out_dir, f'{split}_metrics.json'), metrics)
    if writer is not None:
      with writer.as_default(step=step):
        for name, value in metrics.items():
          tf.summary.scalar(f'eval/{name}', value)
      writer.flush()
    if verbose:
      print(f'Evaluation of step {step} on {split}: {note}{", " if note else ""}'
            f'{len(results)} {what}, COCOeval {time.time() - start:.1f} s; '
            f'results in {out_dir}\n{table}', flush=True)
  return metrics


class BottomUpEvaluator:
  """The bottom-up eval job: every val image through ``BottomUpPredictor``, then COCOeval.

  As the official test: all people of each image, score = mean joint score, no NMS. Each
  process predicts every P-th image on its first local device; the people are gathered.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None):
    from input_pipeline import coco, datasets  # TF-side code
    del mesh  # one image at a time, on one local device
    self.config = config
    root = datasets.dataset_root(config)
    self.annotation_file = coco.annotation_path(root, config.dataset.val_split)
    images = coco.read_json(self.annotation_file).get('images', [])
    if not images:
      raise ValueError(f'{self.annotation_file}: no images to evaluate')
    folder = coco.image_dir(root, config.dataset.val_split)
    images = sorted(images, key=lambda i: i['id'])
    self.num_images = len(images)
    mine = images[jax.process_index()::jax.process_count()]
    self.paths = [os.path.join(folder, i['file_name']) for i in mine]
    self.image_ids = [int(i['id']) for i in mine]
    self.predictor = None

  def predict(self, variables: Any) -> list[dict]:
    """COCO results of every val image (all processes' images, on every process)."""
    from hrnet_jax import bottom_up
    if self.predictor is None:
      self.predictor = bottom_up.BottomUpPredictor(self.config, variables)
    else:
      self.predictor.set_variables(variables)
    k, cap = self.config.model.num_joints, self.config.test.max_num_people
    share = -(-self.num_images // jax.process_count())
    keypoints = np.zeros((share, cap, k, 3), np.float64)
    scores = np.zeros((share, cap), np.float64)
    counts = np.zeros((share,), np.int32)
    ids = np.full((share,), -1, np.int64)
    for i, (path, image_id) in enumerate(zip(self.paths, self.image_ids)):
      people, person_scores = self.predictor.predict(read_rgb(path, self.config))
      n = min(len(people), cap)
      keypoints[i, :n], scores[i, :n] = people[:n], person_scores[:n]
      counts[i], ids[i] = n, image_id
    if jax.process_count() > 1:
      keypoints, scores, counts, ids = (
          np.concatenate(list(x)) for x in multihost_utils.process_allgather(
              (keypoints, scores, counts, ids)))
    results = []
    for person_keypoints, person_scores, n, image_id in zip(keypoints, scores, counts, ids):
      if image_id >= 0:
        results += bottom_up.results_for_image(image_id, person_keypoints[:n], person_scores[:n])
    return results

  def evaluate(self, variables: Any, workdir: str, *, step: int, writer=None,
               verbose: bool = True) -> dict[str, float]:
    """Predicts the val split, writes COCO results and metrics under ``workdir/eval``."""
    start = time.time()
    results = self.predict(variables)
    note = f'{self.num_images} images, predicted in {time.time() - start:.1f} s'
    return report(self.config, results, self.annotation_file, workdir, step=step,
                  writer=writer, verbose=verbose, note=note)


def read_rgb(path: str, config: ml_collections.ConfigDict) -> np.ndarray:
  """An image file as uint8 (H, W, 3), RGB unless ``config.dataset.color_rgb`` is False."""
  from input_pipeline import pipeline  # TF-side code
  try:
    image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                               expand_animations=False).numpy()
  except (tf.errors.OpError, ValueError) as e:
    message = e.message.splitlines()[0] if hasattr(e, 'message') else str(e)
    raise pipeline.DataError(f'{path}: cannot read or decode the image ({message})') from None
  return image if config.dataset.get('color_rgb', True) else image[..., ::-1]


def make_evaluator(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None):
  """The eval job of a config: ``Evaluator`` (top-down) or ``BottomUpEvaluator``."""
  if models.is_bottom_up(config.model):
    return BottomUpEvaluator(config, mesh)
  return Evaluator(config, mesh)
