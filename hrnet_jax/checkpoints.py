"""Orbax checkpoints: model variables (save, restore checked against the model) and the
training run's CheckpointManager under ``workdir/checkpoints/<step>/``."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from etils import epath
import flax
import jax
import ml_collections
import orbax.checkpoint as ocp

from hrnet_jax import config_lib, errors, weights
from hrnet_jax.sharding import data_mesh, replicated

VARIABLES_DIR = 'variables'
METADATA_FILE = 'hrnet_jax_variables.json'


def _flat_shapes(tree: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(dict(tree)), keep_empty_nodes=False)
  return {'/'.join(path): tuple(leaf.shape) for path, leaf in flat.items()}


def save_variables(directory: str | os.PathLike, variables: Mapping[str, Any],
                   metadata: Mapping[str, Any] | None = None,
                   config: ml_collections.ConfigDict | None = None) -> str:
  """Writes ``{'params', 'batch_stats'}`` as an orbax checkpoint in a new directory, with
  the whole ``config`` of their model beside them (``config.json``) if given.

  Refuses a directory that already exists, so nothing saved is overwritten. Returns the path.
  """
  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(directory) and os.listdir(directory):
    raise errors.ExistingFileError(f'{directory} already exists and is not empty; refusing to '
                                   'overwrite it')
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(directory, VARIABLES_DIR), dict(variables))
  checkpointer.wait_until_finished()
  checkpointer.close()
  if jax.process_index() == 0:
    with open(os.path.join(directory, METADATA_FILE), 'w') as f:
      json.dump(dict(metadata or {}), f, indent=2, default=str)
    if config is not None:
      with open(os.path.join(directory, config_lib.CONFIG_FILE), 'w') as f:
        f.write(config.to_json_best_effort(sort_keys=True, indent=2))
  return directory


def restore_variables(directory: str | os.PathLike,
                      model_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Restores variables written by ``save_variables``, after checking every name and shape."""
  directory = os.path.abspath(os.fspath(directory))
  path = os.path.join(directory, VARIABLES_DIR)
  if not os.path.isdir(path):
    path = directory
  if not os.path.isdir(path):
    raise errors.MissingFileError(f'no checkpoint at {directory} (expected a directory written '
                                  'by launch/convert_weights.py or training)')
  _, target = _checked_target(path, model_config)
  return ocp.StandardCheckpointer().restore(path, target)


def _checked_target(path: str, model_config: ml_collections.ConfigDict,
                    ignore: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:
  """The on-disk tree metadata at ``path`` and the model's variable shapes, checked equal.

  Top-level entries named in ``ignore`` (optimizer state, step, RNG) are not compared.
  """
  try:
    on_disk_tree = ocp.StandardCheckpointHandler().metadata(epath.Path(path)).tree
  except Exception as e:  # orbax raises several types for a directory that is not its own
    raise errors.UserError(f'{path} is not an orbax checkpoint of model variables: {e}') from e
  on_disk = _flat_shapes({k: v for k, v in on_disk_tree.items() if k not in ignore})
  target = weights.variable_shapes(model_config)
  target = {k: target.get(k, {}) for k in ('params', 'batch_stats')}
  wanted = _flat_shapes(target)
  missing = sorted(set(wanted) - set(on_disk))
  unexpected = sorted(set(on_disk) - set(wanted))
  misshaped = [(k, on_disk[k], wanted[k]) for k in sorted(set(wanted) & set(on_disk))
               if on_disk[k] != wanted[k]]
  if missing or unexpected or misshaped:
    raise weights.CheckpointMismatchError(path, missing, unexpected, misshaped)
  return on_disk_tree, target


CHECKPOINTS_DIR = 'checkpoints'
BEST_DIR = 'best'  # the best checkpoint by val AP: {'params', 'batch_stats'} and its metrics
_TRAIN_ONLY = ('opt_state', 'step', 'rng')


def train_checkpoint_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """Checkpoints of a run in ``workdir/checkpoints/<step>/``, the last ``keep`` kept.

  Orbax writes each one into a temporary folder and renames it when complete, so a crash
  during a save leaves the previous checkpoints as they were.
  """
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), CHECKPOINTS_DIR),
                               options=options)


def save_train_state(manager: ocp.CheckpointManager, step: int, tree: Any,
                     metadata: Mapping[str, Any]) -> None:
  """Saves a pytree of arrays (params, batch_stats, opt_state, rng) and JSON metadata."""
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                            meta=ocp.args.JsonSave(dict(metadata))), force=True)
  manager.wait_until_finished()


def restore_train_state(manager: ocp.CheckpointManager, step: int,
                        abstract_tree: Any) -> tuple[Any, dict[str, Any]]:
  """The tree saved at ``step``, shaped and sharded like ``abstract_tree``, and its metadata."""
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_tree), meta=ocp.args.JsonRestore()))
  return restored['state'], dict(restored['meta'] or {})


def saved_metadata(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """The JSON metadata saved with ``step`` by ``save_train_state``."""
  restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
  return dict(restored['meta'] or {})


def best_checkpoint_manager(workdir: str) -> ocp.CheckpointManager:
  """The best-by-AP checkpoint of a run in ``workdir/best/<step>/`` (only the last one kept).

  A new best is complete on disk before the previous one is deleted.
  """
  options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), BEST_DIR), options=options)


def run_checkpoint_steps(workdir: str, which: str = CHECKPOINTS_DIR) -> list[int]:
  """The complete checkpoint steps of a run's ``checkpoints`` (or ``best``) folder."""
  folder = os.path.join(os.path.abspath(workdir), which)
  if not os.path.isdir(folder):
    return []
  return sorted(int(name) for name in os.listdir(folder)
                if name.isdigit() and os.path.isdir(os.path.join(folder, name, 'state')))


def restore_run_variables(workdir: str, checkpoint: str, model_config: ml_collections.ConfigDict,
                          sharding: jax.sharding.Sharding | None = None
                          ) -> tuple[dict[str, Any], int, dict]:
  """{'params', 'batch_stats'} of a training run, placed with ``sharding``; step; metadata.

  Without ``sharding`` the variables are replicated over all devices.

  ``checkpoint`` is 'latest', 'best' or a step number. The shapes are checked against
  ``model_config`` first. Any device layout can restore what any other saved.
  """
  which = BEST_DIR if checkpoint == 'best' else CHECKPOINTS_DIR
  steps = run_checkpoint_steps(workdir, which)
  folder = os.path.join(os.path.abspath(workdir), which)
  if not steps:
    raise errors.MissingFileError(f'no checkpoint in {folder}' + (
        ' (the best checkpoint is written by evaluations during training)'
        if which == BEST_DIR else ' (is --workdir a launch/train.py run folder?)'))
  if checkpoint in ('latest', 'best'):
    step = steps[-1]
  elif checkpoint.isdigit() and int(checkpoint) in steps:
    step = int(checkpoint)
  else:
    raise errors.MissingFileError(f'no checkpoint {checkpoint!r} in {folder}: expected latest, '
                                  f'best or one of the steps {steps}')
  path = os.path.join(folder, str(step), 'state')
  if sharding is None:
    sharding = replicated(data_mesh())
  _, target = _checked_target(path, model_config, ignore=_TRAIN_ONLY)
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                          target)
  restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=sharding, dtype=s.dtype),
                              abstract)
  handler = ocp.PyTreeCheckpointHandler()
  variables = handler.restore(epath.Path(path),
                              args=ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args,
                                                          partial_restore=True))
  handler.close()
  meta = ocp.JsonCheckpointHandler().restore(epath.Path(folder) / str(step) / 'meta')
  return variables, step, dict(meta or {})
