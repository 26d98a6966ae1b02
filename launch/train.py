r"""Trains HRNet (top-down) or HigherHRNet (bottom-up), as the config's model says.

python launch/train.py --config=configs/coco_w32.py --workdir=DIR [--config.KEY=VALUE ...]
python launch/train.py --config=configs/coco_higherhrnet_w32_512.py --workdir=DIR

Data-parallel over all devices, resumable, multi-host ready.
Re-running the same command resumes from the latest checkpoint in DIR/checkpoints/. SIGTERM
saves a checkpoint and exits. On a Cloud TPU pod slice or under SLURM / Open MPI the processes
find each other by themselves; elsewhere pass --coordinator_address, --num_processes and
--process_id to every process. Compiled programs are cached in ~/.cache/hrnet_jax/xla
(config.compilation_cache_dir), so a restarted run does not compile them again.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags
import tensorflow as tf

from hrnet_jax import cli, train_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Recipe config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder: config, checkpoints, TensorBoard.')
_DISTRIBUTED = cli.DistributedFlags()


def main(argv: list[str]) -> int:
  """Initialises the job and calls ``train_and_evaluate``."""
  del argv
  tf.config.set_visible_devices([], 'GPU')  # TensorFlow feeds data; JAX owns accelerators
  _DISTRIBUTED.initialize()
  train_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  return 0


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  cli.run(main)
