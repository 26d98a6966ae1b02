"""The ``hrnet-jax`` command (``pip install`` puts it on the PATH).

hrnet-jax predict --model=hrnet_w32_coco_256x192 --input=photo.jpg --output=drawn.jpg
hrnet-jax models                       the model zoo
hrnet-jax train|eval|convert|export ...  launch/train.py, eval.py, convert_weights.py,
                                         export.py (the source checkout's launch/)
hrnet-jax COMMAND --help               a command's flags
"""

from __future__ import annotations

import os
import runpy
import sys

from absl import flags

from hrnet_jax import cli

LAUNCH_SCRIPTS = {'train': 'train.py', 'eval': 'eval.py', 'convert': 'convert_weights.py',
                  'export': 'export.py'}
LAUNCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'launch')


def _predict(args: list[str]) -> None:
  """``hrnet-jax predict``: hrnet_jax.predict_command."""
  from hrnet_jax import predict_command  # pylint: disable=g-import-not-at-top  (its flags)
  if any(a in ('-h', '--help', '-help', '--helpshort') for a in args):
    print(predict_command.__doc__)
    print(flags.FLAGS.module_help(predict_command))
    sys.exit(0)
  cli.run(predict_command.main, argv=['hrnet-jax predict', *args])


def _models(args: list[str]) -> None:
  """``hrnet-jax models``: the zoo's table."""
  del args
  from hrnet_jax import zoo  # pylint: disable=g-import-not-at-top
  print(zoo.markdown_table())


def _launch(command: str, args: list[str]) -> None:
  """Runs launch/<script> of the source checkout with ``args``."""
  script = os.path.join(LAUNCH_DIR, LAUNCH_SCRIPTS[command])
  if not os.path.isfile(script):
    print(f'error: hrnet-jax {command} runs {LAUNCH_SCRIPTS[command]} of the source checkout\'s '
          f'launch/ folder, which this installation does not have ({script}); clone the '
          f'repository and install it with pip install -e .', file=sys.stderr)
    sys.exit(2)
  sys.argv = [script, *args]
  runpy.run_path(script, run_name='__main__')


def main(argv: list[str] | None = None) -> None:
  """Runs ``hrnet-jax COMMAND ARGS``."""
  argv = list(sys.argv if argv is None else argv)
  command, args = (argv[1], argv[2:]) if len(argv) > 1 else (None, [])
  if command == 'predict':
    _predict(args)
  elif command == 'models':
    _models(args)
  elif command in LAUNCH_SCRIPTS:
    _launch(command, args)
  elif command in (None, '-h', '--help', 'help'):
    print(__doc__)
    sys.exit(0 if command else 2)
  else:
    print(f'error: unknown command {command!r}; expected predict, models, '
          f'{", ".join(LAUNCH_SCRIPTS)} (hrnet-jax --help)', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  main()
