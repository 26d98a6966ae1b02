"""Shared entry-point plumbing for launch/: quiet logs and clear errors instead of tracebacks."""

from __future__ import annotations

import sys
from typing import Callable

from absl import app, flags, logging

from hrnet_jax import errors, sharding

# Errors that describe bad input (a file, key or value); shown as one message, no traceback.
# Every other exception is a bug and keeps its traceback.
USER_ERRORS = errors.UserError


def run(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> None:
  """``absl.app.run(main, argv)``, printing user errors as ``error: ...`` with exit status 1."""

  def wrapped(argv: list[str]) -> int | None:
    logging.set_verbosity(logging.WARNING)  # orbax logs every file at INFO
    try:
      return main(argv)
    except USER_ERRORS as e:
      print(f'error: {e}', file=sys.stderr)
      return 1
    except AttributeError as e:  # a bug, not a --config key: keep its traceback
      raise RuntimeError(f'internal error: {e}') from e

  try:
    app.run(wrapped, argv=argv)
  except AttributeError as e:  # ml_collections: --config.KEY for a key that does not exist
    exit_unknown_config_key(e)


def exit_unknown_config_key(error: AttributeError) -> None:
  """Prints ml_collections' error for a --config.KEY that does not exist; exits with 2."""
  cause: BaseException = error
  while cause.args and isinstance(cause.args[0], BaseException):
    cause = cause.args[0]
  text = str(cause.args[0] if cause.args else cause).replace('\n', '; ')
  print(f'error: a --config key in the command line does not exist: {text}', file=sys.stderr)
  sys.exit(2)


class DistributedFlags:
  """--coordinator_address, --num_processes, --process_id of a multi-process job."""

  def __init__(self):
    self.coordinator = flags.DEFINE_string(
        'coordinator_address', None, 'host:port of process 0, for a multi-process job.')
    self.num_processes = flags.DEFINE_integer('num_processes', None, 'Processes in the job.')
    self.process_id = flags.DEFINE_integer('process_id', None,
                                           'This process (0 .. num_processes-1).')

  def initialize(self) -> None:
    """``jax.distributed`` from the flags (or the environment of a TPU pod, SLURM, MPI)."""
    sharding.initialize_distributed(self.coordinator.value, self.num_processes.value,
                                    self.process_id.value)
