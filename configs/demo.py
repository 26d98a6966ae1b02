r"""A small HRNet on the synthetic COCO-format dataset, sized to train on a 2-core CPU.

python launch/train.py --config=configs/demo.py --workdir=DIR

The dataset is written once into ~/.cache/hrnet_jax (or $HRNET_JAX_CACHE) on first use.
The model is HRNet-W16 with one block per module, one module per stage and one stage-1
Bottleneck (official: four), at 96x64 input.
"""

import ml_collections

from hrnet_jax import config_lib, models


def get_config() -> ml_collections.ConfigDict:
  """Returns the demo recipe: W16 HRNet at 96x64 on synthetic people."""
  config = config_lib.topdown_config(width=16, image_size=(64, 96), sigma=2, batch_size=32,
                                     test_batch_size=64)
  config.model = models.pose_hrnet_config(16, num_blocks=1, num_modules=(1, 1, 1),
                                          stem_blocks=1)
  config.dataset.source = 'synthetic'
  config.dataset.root = ''
  config.dataset.train_split = 'train'
  config.dataset.val_split = 'val'
  # One person per image keeps the CPU run short. (Three per image, with the flips below
  # still on, reached AP 0.46 in 1,512 steps; not measured without the flips.)
  config.dataset.synthetic = ml_collections.ConfigDict(
      {'num_train': 4000, 'num_val': 200, 'seed': 0, 'max_people': 1})
  config.optim.num_epochs = 16
  config.optim.lr_steps = (12, 15)
  # The synthetic set tells left from right by colour (warm left, cool right), a cue that a
  # mirror image keeps on the same limbs, so flips would teach the wrong side: no flip
  # augmentation and no flip test here (real people keep their chirality in a mirror).
  config.augment.flip = 0.0
  config.test.flip_test = False
  config.test.use_gt_bbox = True
  config.checkpoint_every_steps = 250
  config.eval_every_steps = 250
  config.log_every_steps = 50
  return config
