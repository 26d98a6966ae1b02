"""Data parallelism over every device of every process: the mesh, shardings, global batches."""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Iterator, Mapping

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


class Prefetcher:
  """Global batches made ahead of the step by a background thread, ``depth`` of them at most.

  The thread reads this process's numpy batches from ``stream`` and places each on the
  devices with ``place`` (``global_batch``: the host-to-device copy), so the caller's thread
  only takes batches that are ready. ``depth`` 0 reads and places each one in the caller's
  thread when it is asked for. An exception of the thread (a ``DataError`` naming a bad
  image) is raised, unchanged, by the ``next`` call that would have returned its batch.

  ``skipped`` is the stream's ``skipped`` count as of the last batch taken, not of those read
  ahead, so a checkpoint records the data position of the next step to run. As a context
  manager, leaving it (at the end, on preemption, on an error) stops and joins the thread.
  """

  _JOIN_SECONDS = 60.0  # a thread inside a slow read gets this long to finish it

  def __init__(self, stream: Iterator[Mapping[str, np.ndarray]],
               place: Callable[[Mapping[str, np.ndarray]], Any], depth: int):
    if depth < 0:
      raise errors.ConfigError(f'config.prefetch_batches is {depth}; expected 0 (off) or more')
    self._stream, self._place = stream, place
    self.skipped = getattr(stream, 'skipped', 0)
    self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    self._stop = threading.Event()
    self._finished = False  # the thread's end or error was handed out
    self._thread = None
    if depth:
      self._thread = threading.Thread(target=self._run, name='prefetch_batches', daemon=True)
      self._thread.start()

  def _read(self) -> tuple[Any, int]:
    """The next batch placed on the devices, and the stream's ``skipped`` after it."""
    batch = self._place(next(self._stream))
    return batch, getattr(self._stream, 'skipped', 0)

  def _run(self) -> None:
    """The thread: reads and places batches until stopped, the stream ends or fails."""
    while not self._stop.is_set():
      try:
        batch, skipped = self._read()
        item = ('batch', jax.block_until_ready(batch), skipped)  # copied before it is taken
      except StopIteration:
        item = ('end',)
      except BaseException as e:  # pylint: disable=broad-except  (re-raised by __next__)
        item = ('error', e)
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if item[0] != 'batch':
        return

  def __iter__(self) -> Iterator[Any]:
    return self

  def __next__(self) -> Any:
    if self._thread is None:
      batch, self.skipped = self._read()
      return batch
    if self._finished:
      raise StopIteration
    while True:
      alive = self._thread.is_alive()  # before: a thread ends after its last put
      try:
        item = self._queue.get(timeout=1.0)
        break
      except queue.Empty:
        if not alive:
          raise RuntimeError('the batch prefetch thread stopped') from None
    if item[0] == 'batch':
      self.skipped = item[2]
      return item[1]
    self._finished = True
    if item[0] == 'error':
      raise item[1]
    raise StopIteration

  def close(self) -> None:
    """Stops the thread and drops the batches read ahead."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join(self._JOIN_SECONDS)
      if self._thread.is_alive():
        logging.warning('the batch prefetch thread is still reading after %.0f s; left behind',
                        self._JOIN_SECONDS)
    while True:
      try:
        self._queue.get_nowait()
      except queue.Empty:
        break

  def __enter__(self) -> 'Prefetcher':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def check_batch_size(global_batch_size: int) -> None:
  """The global batch must split evenly over devices (and so over processes)."""
  if global_batch_size % jax.device_count():
    raise errors.UserError(f'config.batch_size {global_batch_size} does not split over '
                           f'{jax.device_count()} devices; use a multiple of '
                           f'{jax.device_count()}')

