"""Data parallelism over every device of every process: the mesh, shardings, global batches."""

from __future__ import annotations

import os
from typing import Mapping

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hrnet_jax import errors

DATA_AXIS = 'data'


def _multiprocess_environment() -> bool:
  """Whether the launcher started several processes (Cloud TPU pod, SLURM, Open MPI)."""
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  if len([h for h in hosts.split(',') if h]) > 1:
    return True
  for key in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    if int(os.environ.get(key, '1') or 1) > 1:
      return True
  return False


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """``jax.distributed.initialize`` when flags or the environment ask for several processes.

  With explicit flags on CPU, collectives go through gloo (a CPU-only multi-process job).
  """
  if coordinator_address:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU arrays only
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  elif _multiprocess_environment():
    jax.distributed.initialize()
  else:
    return
  logging.info('process %d of %d, %d local of %d devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def data_mesh() -> Mesh:
  """A 1-D mesh over all devices of all processes, axis ``data``."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (parameters, optimizer state)."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """The leading (batch) axis split over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Global arrays from this process's rows of every global batch."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def check_batch_size(global_batch_size: int) -> None:
  """The global batch must split evenly over devices (and so over processes)."""
  if global_batch_size % jax.device_count():
    raise errors.UserError(f'config.batch_size {global_batch_size} does not split over '
                           f'{jax.device_count()} devices; use a multiple of '
                           f'{jax.device_count()}')

