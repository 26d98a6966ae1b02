"""Orbax checkpoints: model variables (save, restore checked against the model) and the
training run's CheckpointManager under ``workdir/checkpoints/<step>/``."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import flax
import jax
import ml_collections
import orbax.checkpoint as ocp

from hrnet_jax import weights

VARIABLES_DIR = 'variables'
METADATA_FILE = 'hrnet_jax_variables.json'


def _flat_shapes(tree: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(dict(tree)), keep_empty_nodes=False)
  return {'/'.join(path): tuple(leaf.shape) for path, leaf in flat.items()}


def save_variables(directory: str | os.PathLike, variables: Mapping[str, Any],
                   metadata: Mapping[str, Any] | None = None) -> str:
  """Writes ``{'params', 'batch_stats'}`` as an orbax checkpoint in a new directory.

  Refuses a directory that already exists, so nothing saved is overwritten. Returns the path.
  """
  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(directory) and os.listdir(directory):
    raise FileExistsError(f'{directory} already exists and is not empty; refusing to overwrite it')
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(directory, VARIABLES_DIR), dict(variables))
  checkpointer.wait_until_finished()
  checkpointer.close()
  if jax.process_index() == 0:
    with open(os.path.join(directory, METADATA_FILE), 'w') as f:
      json.dump(dict(metadata or {}), f, indent=2, default=str)
  return directory


def restore_variables(directory: str | os.PathLike,
                      model_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Restores variables written by ``save_variables``, after checking every name and shape."""
  directory = os.path.abspath(os.fspath(directory))
  path = os.path.join(directory, VARIABLES_DIR)
  if not os.path.isdir(path):
    path = directory
  if not os.path.isdir(path):
    raise FileNotFoundError(f'no checkpoint at {directory} (expected a directory written by '
                            f'launch/convert_weights.py or training)')
  checkpointer = ocp.StandardCheckpointer()
  try:
    on_disk = _flat_shapes(checkpointer.metadata(path).item_metadata.tree)
  except Exception as e:  # orbax raises several types for a directory that is not its own
    raise ValueError(f'{path} is not an orbax checkpoint of model variables: {e}') from e
  target = weights.variable_shapes(model_config)
  target = {k: target.get(k, {}) for k in ('params', 'batch_stats')}
  wanted = _flat_shapes(target)
  missing = sorted(set(wanted) - set(on_disk))
  unexpected = sorted(set(on_disk) - set(wanted))
  misshaped = [(k, on_disk[k], wanted[k]) for k in sorted(set(wanted) & set(on_disk))
               if on_disk[k] != wanted[k]]
  if missing or unexpected or misshaped:
    raise weights.CheckpointMismatchError(path, missing, unexpected, misshaped)
  return checkpointer.restore(path, target)


CHECKPOINTS_DIR = 'checkpoints'


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
