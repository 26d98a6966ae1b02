r"""Draws the poses of photos, folders, videos, cameras or streams: ``hrnet-jax predict``.

python launch/demo.py --model=ZOO_NAME --input=IMAGE|FOLDER|VIDEO|0|URL --output=PATH
python launch/demo.py --workdir=DIR --input=... --output=... [--boxes=DETECTIONS.json]

The same program as ``hrnet-jax predict`` (hrnet_jax/predict_command.py), whose --help
describes every flag.
"""

from __future__ import annotations

from absl import flags

from hrnet_jax import cli, predict_command

flags.adopt_module_key_flags(predict_command)

if __name__ == '__main__':
  cli.run(predict_command.main)
