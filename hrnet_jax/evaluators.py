"""Evaluators named in the config, and the one place that writes what they measured.

``config.evals`` maps a name to settings with a ``type``, as big_vision's evaluators:

    config.evals = {'coco': {'type': 'coco_keypoints'}}

``from_config`` builds them once (boxes read, pipelines made); ``run(variables)`` of each
returns an ``EvalOutput`` (metrics, the files to save, a printable table) and writes nothing.
``write`` saves every output under ``workdir/eval/``, sends ``eval/<name>/<metric>`` scalars
to TensorBoard and prints the tables: training and ``launch/eval.py`` both call it. Metrics
are named ``<name>/<metric>`` (e.g. ``coco/AP``); ``config.best_metric`` names the one that
picks the best checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
import tensorflow as tf

from hrnet_jax import crowdpose, errors, evaluation, mpii, posetrack, tasks
from hrnet_jax import keypoints as kp
from input_pipeline import coco, datasets

EVAL_DIR = 'eval'


@dataclasses.dataclass(frozen=True)
class EvalOutput:
  """What one evaluator measured: metrics, files to save under ``eval/``, a report."""
  metrics: dict[str, float]
  files: dict[str, Any]  # file name -> JSON value
  report: str  # one line on what was evaluated, then the metric table


class Evaluator(Protocol):
  """An evaluation built once from the config and run on any variables."""
  source: tasks.ValSource  # the val split it predicts (shared by a config's evaluators)

  def run(self, variables: Any) -> EvalOutput:
    """Evaluates ``variables``; writes nothing."""


class CocoKeypoints:
  """COCOeval (keypoints) of the val split, predicted as the official test of the model kind.

  Top-down: person boxes, flip test, decoding, rescoring and OKS NMS. Bottom-up: whole
  images, grouping, no NMS. No people at all (an untrained model) scores 0 on every metric.
  OKS uses the sigmas of ``config.keypoints``.
  """
  metric_names = evaluation.METRIC_NAMES
  tool = 'COCOeval'

  def __init__(self, source: tasks.ValSource, config: ml_collections.ConfigDict):
    self.source = source
    self.keypoint_set = kp.from_config(config)

  def score(self, results: list[dict]) -> tuple[dict[str, float], str]:
    """The metrics and printed table of non-empty results."""
    return evaluation.coco_keypoint_eval(self.source.ground_truth, results,
                                         sigmas=self.keypoint_set.sigmas)

  def run(self, variables: Any) -> EvalOutput:
    """Predicts the split and scores it; the results file and metrics come back as files."""
    predictions = self.source.predict(variables)
    start = time.time()
    results, split = predictions.results, self.source.split
    if results:
      metrics, table = self.score(results)
    else:
      metrics, table = dict.fromkeys(self.metric_names, 0.0), '(no people found: 0)'
    return EvalOutput(
        metrics=metrics,
        files={f'{split}_keypoints_results.json': results, f'{split}_metrics.json': metrics},
        report=f'{split}: {predictions.note}, {self.tool} {time.time() - start:.1f} s\n{table}')


class CrowdPoseKeypoints(CocoKeypoints):
  """The crowdpose-api's AP of the val split: AP, AP50, AP75, AR and AP easy/medium/hard."""
  metric_names = crowdpose.METRIC_NAMES
  tool = 'crowdpose-api AP'

  def score(self, results: list[dict]) -> tuple[dict[str, float], str]:
    return crowdpose.crowdpose_keypoint_eval(self.source.ground_truth, results,
                                             self.keypoint_set.sigmas)


class PoseTrackMap(CocoKeypoints):
  """PoseTrack18's own metric (poseval): per-joint AP and the total mAP, head boxes as scale."""
  metric_names = posetrack.METRIC_NAMES
  tool = 'poseval mAP'

  def score(self, results: list[dict]) -> tuple[dict[str, float], str]:
    return posetrack.posetrack_map(self.source.ground_truth, results)


class MpiiPckh:
  """PCKh of top-down predictions on the ground-truth boxes, as the official MPII evaluate.

  Ground truth and head boxes come from the official ``gt_valid.mat`` (``headbox_file``,
  relative to the dataset root), whose people are the split's records in order, or from the
  records themselves (joints and a ``headbox`` [x1, y1, x2, y2] per record).
  """

  def __init__(self, source: tasks.ValSource, config: ml_collections.ConfigDict,
               headbox_file: str = ''):
    if not isinstance(source, tasks.TopDownVal) or not config.test.use_gt_bbox:
      raise errors.ConfigError('the mpii_pckh evaluator scores top-down predictions on the '
                               'ground-truth boxes: needs a pose_hrnet model and '
                               'config.test.use_gt_bbox=True')
    if kp.from_config(config).names != kp.MPII_KEYPOINT_NAMES:
      raise errors.ConfigError('the mpii_pckh evaluator needs the MPII joints '
                               "(config.keypoints = the 'mpii' preset)")
    self.source = source
    annotations = sorted(source.ground_truth['annotations'], key=lambda a: a['id'])
    self.annotation_ids = np.array([a['id'] for a in annotations], np.int64)
    if headbox_file:
      root = datasets.dataset_root(config.dataset)
      path = headbox_file if os.path.isabs(headbox_file) else os.path.join(root, headbox_file)
      self.truth = mpii.load_ground_truth_mat(path)
      if len(self.truth['joints']) != len(annotations):
        raise errors.ConfigError(f'{path} has {len(self.truth["joints"])} people but the split '
                                 f'has {len(annotations)} records: expected the same people')
    else:
      self.truth = mpii.ground_truth_of_records(annotations)

  def run(self, variables: Any) -> EvalOutput:
    """Predicts every record's box and scores PCKh at 0.5 and 0.1 per joint group."""
    start = time.time()
    found = self.source.crop_keypoints(variables)
    seconds = time.time() - start
    rows = np.searchsorted(self.annotation_ids, found['annotation_id'])
    predictions = np.zeros((len(self.annotation_ids),) + found['keypoints'].shape[1:])
    predictions[rows] = found['keypoints']
    metrics = mpii.pckh_table(predictions[..., :2], self.truth['joints'],
                              self.truth['visible'], self.truth['headboxes'])
    split = self.source.split
    results = [{'annotation_id': int(i), 'keypoints': [float(v) for v in p.reshape(-1)]}
               for i, p in zip(self.annotation_ids, predictions)]
    return EvalOutput(
        metrics=metrics,
        files={f'{split}_mpii_predictions.json': results, f'{split}_pckh.json': metrics},
        report=f'{split}: {len(rows)} people predicted in {seconds:.1f} s\n'
               f'{mpii.format_table(metrics)}')


# type -> (val source, config, **settings) -> evaluator
TYPES = {'coco_keypoints': CocoKeypoints, 'crowdpose_keypoints': CrowdPoseKeypoints,
         'posetrack_map': PoseTrackMap, 'mpii_pckh': MpiiPckh}


def from_config(config: ml_collections.ConfigDict, task: tasks.Task,
                mesh: jax.sharding.Mesh) -> dict[str, Evaluator]:
  """The evaluators of ``config.evals`` (name -> settings with a ``type``), built once; they
  share one val source (the split read, its boxes and pipeline built once)."""
  built, source = {}, None
  for name, settings in config.evals.items():
    settings = dict(settings)
    kind = settings.pop('type', None)
    if kind not in TYPES:
      raise errors.ConfigError(f'config.evals.{name}.type is {kind!r}; expected one of '
                               f'{sorted(TYPES)}')
    source = source or task.val_source(mesh)
    try:
      built[name] = TYPES[kind](source, config, **settings)
    except TypeError as e:
      raise errors.ConfigError(f'config.evals.{name}: {e}') from None
  return built


def run_all(evaluators: dict[str, Evaluator], variables: Any) -> dict[str, EvalOutput]:
  """Every evaluator's output on ``variables`` (their shared source predicts once)."""
  outputs = {name: evaluator.run(variables) for name, evaluator in evaluators.items()}
  for evaluator in evaluators.values():
    evaluator.source.forget()  # no old variables kept alive between evaluations
  return outputs


def flat_metrics(outputs: dict[str, EvalOutput]) -> dict[str, float]:
  """{'<name>/<metric>': value} of all outputs."""
  return {f'{name}/{k}': float(v) for name, out in outputs.items() for k, v in out.metrics.items()}


def write(outputs: dict[str, EvalOutput], workdir: str, *, step: int, writer=None,
          verbose: bool = True) -> dict[str, float]:
  """Saves the outputs' files in ``workdir/eval``, TensorBoard scalars, prints the reports.

  Only process 0 writes and prints (every process holds the same outputs). Returns the
  flat metrics.
  """
  metrics = flat_metrics(outputs)
  if jax.process_index() != 0:
    return metrics
  out_dir = os.path.join(os.path.abspath(workdir), EVAL_DIR)
  for name, out in outputs.items():
    for file_name, value in out.files.items():
      coco.write_json(os.path.join(out_dir, file_name), value)
    if verbose:
      print(f'Evaluation {name!r} of step {step} on {out.report}\n(files in {out_dir})',
            flush=True)
  if writer is not None:
    with writer.as_default(step=step):
      for name, value in metrics.items():
        tf.summary.scalar(f'{EVAL_DIR}/{name}', value)
    writer.flush()
  return metrics


def check_best_metric(config: ml_collections.ConfigDict) -> None:
  """``config.best_metric`` must name a metric of one of ``config.evals`` (or be empty)."""
  metric = config.best_metric
  if metric and metric.split('/')[0] not in config.evals:
    raise errors.ConfigError(f'config.best_metric is {metric!r}, but config.evals has no '
                             f'evaluator {metric.split("/")[0]!r} (has: '
                             f'{", ".join(config.evals.keys()) or "none"})')
