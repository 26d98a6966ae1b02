r"""Runs the evaluators of a config (config.evals) on a model: its dataset's metric of the val
split (COCOeval, MPII PCKh, CrowdPose AP or PoseTrack18 mAP; docs/evaluation.md).

The val split is predicted as the official test of the model's kind (top-down HRNet: person
boxes, flip test, official decoding, OKS NMS; bottom-up HigherHRNet: whole images, flip test,
the official grouping, no NMS).

python launch/eval.py --workdir=DIR [--checkpoint=latest|best|STEP] [--config.KEY=VALUE ...]
python launch/eval.py --config=configs/coco_w32.py --init_from=CONVERTED_DIR --workdir=OUT
python launch/eval.py --init_from=ZOO_NAME --workdir=OUT [--config.dataset.root=data/coco]

The first form reads DIR/config.json (written by launch/train.py) and a checkpoint of
DIR/checkpoints/ (or DIR/best/). The second evaluates converted official weights (a folder
of launch/convert_weights.py, or the official .pth itself); the third a zoo model
(hrnet_jax/zoo.py: downloaded, verified and converted once) with its publisher's test.
Results and metrics go to DIR/eval/: <split>_keypoints_results.json (COCO results format) and <split>_metrics.json
(MPII PCKh: <split>_mpii_predictions.json and <split>_pckh.json).
"""

from __future__ import annotations

import sys

from absl import flags
import jax
from ml_collections import config_flags
import tensorflow as tf

from hrnet_jax import (checkpoints, cli, config_lib, errors, evaluators, sharding, tasks,
                       train_lib, zoo)


def _flag_value(argv: list[str], name: str) -> str | None:
  """The value of ``--name=V`` or ``--name V`` in argv, before absl parses it."""
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      return arg.split('=', 1)[1]
    if arg == f'--{name}' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _define_config_flag(argv: list[str]) -> flags.FlagHolder:
  """--config: a recipe file, or else the run's saved config, so --config.KEY=V works on it."""
  workdir, init_from = _flag_value(argv, 'workdir'), _flag_value(argv, 'init_from')
  if _flag_value(argv, 'config') is None and (workdir or init_from):
    try:
      saved = (zoo.get(init_from).config() if init_from and zoo.is_zoo_name(init_from)
               else config_lib.load_saved_config(workdir))
    except errors.UserError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(1)
    try:  # the --config.KEY overrides are parsed here, when the flag is defined
      return config_flags.DEFINE_config_dict(
          'config', saved, "The run config (DIR/config.json) or the zoo model's recipe.")
    except AttributeError as e:
      cli.exit_unknown_config_key(e)
  return config_flags.DEFINE_config_file('config', None, 'Recipe config file.', lock_config=True)


_CONFIG = _define_config_flag(sys.argv)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder (config, checkpoints); eval/ output.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best' or a step number.")
_INIT_FROM = flags.DEFINE_string(
    'init_from', None, 'A zoo model name (its recipe is the config unless --config is given), '
    'a URL, converted weights (folder) or a .pth (official or mmpose layout).')
_DISTRIBUTED = cli.DistributedFlags()


def main(argv: list[str]) -> int:
  """Restores the variables, runs the config's evaluators and writes what they measured."""
  del argv
  tf.config.set_visible_devices([], 'GPU')
  _DISTRIBUTED.initialize()
  config, workdir = _CONFIG.value, _WORKDIR.value
  if config is None:
    raise errors.ConfigError('pass --workdir of a training run, or --config=FILE')
  train_lib.use_compilation_cache(config)
  task = tasks.get_task(config)
  mesh = sharding.data_mesh()
  if _INIT_FROM.value:
    variables = zoo.load_variables(_INIT_FROM.value, config.model)
    variables = jax.device_put({k: variables[k] for k in ('params', 'batch_stats')},
                               sharding.replicated(mesh))
    step, what = 0, _INIT_FROM.value
  else:
    variables, step, _ = checkpoints.restore_run_variables(
        workdir, _CHECKPOINT.value, config.model, sharding.replicated(mesh))
    what = f'{workdir} checkpoint {_CHECKPOINT.value} (step {step})'
  if jax.process_index() == 0:
    print(f'Evaluating {what} on {config.dataset.val_split} with {task.describe_test()}; '
          f'evaluators {", ".join(config.evals.keys())}.', flush=True)
  evals = evaluators.from_config(config, task, mesh)
  writer = (tf.summary.create_file_writer(f'{workdir}/{evaluators.EVAL_DIR}')
            if jax.process_index() == 0 else None)
  evaluators.write(evaluators.run_all(evals, variables), workdir, step=step, writer=writer)
  return 0


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  cli.run(main)
