"""Orbax checkpoints of model variables: save, and restore checked against the model."""

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
