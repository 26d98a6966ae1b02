r"""Converts an official PyTorch HRNet checkpoint (.pth) into an orbax checkpoint.

python launch/convert_weights.py --checkpoint=pose_hrnet_w32_256x192.pth \
    --config=configs/coco_w32.py --output=DIR
python launch/convert_weights.py --checkpoint=ZOO_NAME --output=DIR  (the zoo's recipe)

Pose checkpoints (a state_dict, a training checkpoint with 'state_dict', 'module.' prefixes)
are loaded strictly: every key must match the model. ImageNet-pretrained HRNet classification
checkpoints are recognised by their classifier head; only the backbone is taken, the pose head
is initialised as in training, and both lists are printed. No torch is needed, and nothing in
the .pth is executed. Training and evaluation start from DIR with --config.init_from=DIR.
"""

from __future__ import annotations

import json
import os

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

from hrnet_jax import checkpoints, cli, models, weights, zoo

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Recipe config file (default: the '
                                          "zoo model's, for a zoo name).",
                                          lock_config=True)
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'The .pth to convert (official or mmpose layout), a URL or a zoo name.')
_OUTPUT = flags.DEFINE_string('output', None, 'New directory for the orbax checkpoint.')
_BACKBONE_ONLY = flags.DEFINE_bool(
    'backbone_only', None, 'Take only the backbone (ImageNet-pretrained checkpoints). '
    'Default: detected from the checkpoint keys.')


def main(argv: list[str]) -> int:
  """Converts, writes the orbax checkpoint and prints the heatmap shape of one forward pass."""
  del argv
  config = zoo.config_for(_CHECKPOINT.value, _CONFIG.value)
  layout = zoo.get(_CHECKPOINT.value).layout if zoo.is_zoo_name(_CHECKPOINT.value) else None
  checkpoint = zoo.fetch(_CHECKPOINT.value)
  state = weights.read_state_dict(checkpoint, layout=layout)
  backbone_only = _BACKBONE_ONLY.value
  if backbone_only is None:
    backbone_only = weights.is_classification_checkpoint(state)
  model = models.create_model(config.model)
  width, height = config.dataset.image_size
  images = jnp.zeros((1, height, width, 3), jnp.float32)

  if backbone_only:
    init = jax.jit(lambda x: model.init(jax.random.key(config.seed), x, train=False))(images)
    variables, unused = weights.state_dict_to_variables(
        state, config.model, source=checkpoint, prefixes=weights.BACKBONE_PREFIXES,
        base=init)
    kept = [k for k in weights.key_map(weights.variable_shapes(config.model))
            if k.split('.', 1)[0] not in weights.BACKBONE_PREFIXES]
    print(f'Backbone taken from {checkpoint}.')
    print(f'  {len(unused)} checkpoint tensors not used (not part of the pose model): '
          f'{", ".join(unused[:12])}{" ..." if len(unused) > 12 else ""}')
    print(f'  {len(kept)} model tensors initialised, not loaded: {", ".join(kept)}')
  else:
    variables, _ = weights.state_dict_to_variables(state, config.model, source=checkpoint)

  num_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(variables['params']))
  heatmaps = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  out = checkpoints.save_variables(_OUTPUT.value, variables, metadata={
      'source': (_CHECKPOINT.value if zoo.is_zoo_name(_CHECKPOINT.value)
                 else os.path.abspath(checkpoint)),
      'backbone_only': backbone_only,
      'model': config.model.to_dict(),
      'num_params': num_params,
  }, config=config)
  print(f'Wrote {out} ({num_params:,} parameters, model {json.dumps(config.model.to_dict())}).')
  print(f'Heatmaps of a {tuple(images.shape)} input: {tuple(heatmaps.shape)} '
        f'(max |heatmap| {float(jnp.abs(heatmaps).max()):.4f}).')
  return 0


if __name__ == '__main__':
  flags.mark_flags_as_required(['checkpoint', 'output'])
  cli.run(main)
