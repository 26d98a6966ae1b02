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
import tensorflow as tf

from hrnet_jax import errors, evaluation, tasks
from input_pipeline import coco

EVAL_DIR = 'eval'


@dataclasses.dataclass(frozen=True)
class EvalOutput:
  """What one evaluator measured: metrics, files to save under ``eval/``, a report."""
  metrics: dict[str, float]
  files: dict[str, Any]  # file name -> JSON value
  report: str  # one line on what was evaluated, then the metric table


class Evaluator(Protocol):
  """An evaluation built once from the config and run on any variables."""

  def run(self, variables: Any) -> EvalOutput:
    """Evaluates ``variables``; writes nothing."""


class CocoKeypoints:
  """COCOeval (keypoints) of the val split, predicted as the official test of the model kind.

  Top-down: person boxes, flip test, decoding, rescoring and OKS NMS. Bottom-up: whole
  images, grouping, no NMS. No people at all (an untrained model) scores 0 on every metric.
  """

  def __init__(self, source: tasks.ValSource):
    self.source = source

  def run(self, variables: Any) -> EvalOutput:
    """Predicts the split and scores it; the results file and metrics come back as files."""
    predictions = self.source.predict(variables)
    start = time.time()
    results, split = predictions.results, self.source.split
    if results:
      metrics, table = evaluation.coco_keypoint_eval(self.source.annotation_file, results)
    else:
      metrics, table = dict.fromkeys(evaluation.METRIC_NAMES, 0.0), '(no people found: 0)'
    return EvalOutput(
        metrics=metrics,
        files={f'{split}_keypoints_results.json': results, f'{split}_metrics.json': metrics},
        report=f'{split}: {predictions.note}, COCOeval {time.time() - start:.1f} s\n{table}')


def coco_keypoints(task: tasks.Task, mesh: jax.sharding.Mesh) -> CocoKeypoints:
  """The ``coco_keypoints`` evaluator of a task: its val split, as its official test."""
  return CocoKeypoints(task.val_source(mesh))


# type -> (task, mesh, **settings) -> evaluator
TYPES = {'coco_keypoints': coco_keypoints}


def from_config(config: ml_collections.ConfigDict, task: tasks.Task,
                mesh: jax.sharding.Mesh) -> dict[str, Evaluator]:
  """The evaluators of ``config.evals`` (name -> settings with a ``type``), built once."""
  built = {}
  for name, settings in config.evals.items():
    settings = dict(settings)
    kind = settings.pop('type', None)
    if kind not in TYPES:
      raise errors.ConfigError(f'config.evals.{name}.type is {kind!r}; expected one of '
                               f'{sorted(TYPES)}')
    built[name] = TYPES[kind](task, mesh, **settings)
  return built


def run_all(evaluators: dict[str, Evaluator], variables: Any) -> dict[str, EvalOutput]:
  """Every evaluator's output on ``variables``."""
  return {name: evaluator.run(variables) for name, evaluator in evaluators.items()}


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
