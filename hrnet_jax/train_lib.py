"""Training: the train state, a pure jit-able train step, and ``train_and_evaluate``."""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time
from typing import Any

from absl import logging
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
import tensorflow as tf

from hrnet_jax import checkpoints, config_lib, eval_lib, losses, models, sharding, weights



class TrainState(train_state.TrainState):
  """Flax TrainState plus the BatchNorm running statistics."""
  batch_stats: Any = None


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       image_shape: tuple[int, ...]) -> TrainState:
  """Initialises variables for images of ``image_shape`` (N, H, W, 3) and the optimizer."""
  variables = model.init(rng, jnp.zeros(image_shape, jnp.float32), train=False)
  return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                           batch_stats=variables['batch_stats'])


def _apply_loss(state: TrainState, loss_fn) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on ``loss_fn(params) -> (loss, (batch_stats, extra metrics))``."""
  (loss, (batch_stats, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  finite = jnp.isfinite(loss)
  for x in jax.tree.leaves((state.params, state.batch_stats)):
    finite &= jnp.all(jnp.isfinite(x))
  return state, {'loss': loss, 'grad_norm': optax.tree.norm(grads), 'finite': finite, **extra}


def _apply_train(state: TrainState, params, images: jax.Array):
  """The model in training mode: its outputs and the updated BatchNorm statistics."""
  outputs, updates = state.apply_fn({'params': params, 'batch_stats': state.batch_stats},
                                    images, train=True, mutable=['batch_stats'])
  return outputs, updates['batch_stats']


def train_step(state: TrainState, batch: dict[str, jax.Array],
               rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on ``batch`` ('image', 'heatmaps', 'target_weight'); pure.

  ``rng`` is unused by HRNet (no dropout) and kept so every model shares the signature.
  """
  del rng

  def loss_fn(params):
    heatmaps, batch_stats = _apply_train(state, params, batch['image'])
    loss = losses.joints_mse_loss(heatmaps, batch['heatmaps'], batch.get('target_weight'))
    return loss, (batch_stats, {})

  return _apply_loss(state, loss_fn)


def bottom_up_loss(outputs: tuple[jax.Array, jax.Array], batch: dict[str, jax.Array], *,
                   heatmap_factors=(1.0, 1.0), push_factor: float = 1e-3,
                   pull_factor: float = 1e-3,
                   ae_type: str = 'exp') -> tuple[jax.Array, dict[str, jax.Array]]:
  """The official MultiLossFactory on HigherHRNet's outputs, averaged over the batch.

  Masked heatmap MSE at 1/4 and 1/2 (x ``heatmap_factors``) plus the associative-embedding
  push and pull losses of the 1/4 tags; returns the total and its parts.
  """
  quarter, half = outputs
  k = half.shape[-1]
  heat_quarter = losses.masked_heatmap_loss(quarter[..., :k], batch['heatmaps_quarter'],
                                            batch['mask_quarter']) * heatmap_factors[0]
  heat_half = losses.masked_heatmap_loss(half, batch['heatmaps_half'],
                                         batch['mask_half']) * heatmap_factors[1]
  push, pull = losses.associative_embedding_loss(quarter[..., k:], batch['tag_locations'],
                                                 ae_type)
  parts = {'heatmap_loss_quarter': heat_quarter.mean(), 'heatmap_loss_half': heat_half.mean(),
           'push_loss': (push * push_factor).mean(), 'pull_loss': (pull * pull_factor).mean()}
  return sum(parts.values()), parts


def bottom_up_train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array,
                         **loss_options) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step of HigherHRNet on a ``bottom_up_pipeline`` batch; pure.

  ``loss_options`` are ``bottom_up_loss``'s factors (``functools.partial`` them in).
  """
  del rng

  def loss_fn(params):
    outputs, batch_stats = _apply_train(state, params, batch['image'])
    loss, parts = bottom_up_loss(outputs, batch, **loss_options)
    return loss, (batch_stats, parts)

  return _apply_loss(state, loss_fn)


TOP_DOWN_BATCH_KEYS = ('image', 'heatmaps', 'target_weight')


def make_train_step(config: ml_collections.ConfigDict):
  """The config's train step, a pure (state, batch, rng) function, and the batch keys it reads."""
  if not models.is_bottom_up(config.model):
    return train_step, TOP_DOWN_BATCH_KEYS
  from input_pipeline import bottom_up_pipeline  # TF-side code
  loss = config.loss
  step = functools.partial(bottom_up_train_step, heatmap_factors=tuple(loss.heatmap_factors),
                           push_factor=loss.push_factor, pull_factor=loss.pull_factor,
                           ae_type=loss.ae_type)
  return step, bottom_up_pipeline.BATCH_KEYS


class NonFiniteLossError(ValueError):
  """The loss became NaN or inf; no checkpoint of the bad parameters was written."""


def create_learning_rate_fn(config: ml_collections.ConfigDict,
                            steps_per_epoch: int) -> optax.Schedule:
  """The official MultiStepLR (x ``lr_factor`` at each epoch of ``lr_steps``), per step."""
  o = config.optim
  return optax.piecewise_constant_schedule(
      o.learning_rate, {int(e * steps_per_epoch): o.lr_factor for e in o.lr_steps})


def create_optimizer(config: ml_collections.ConfigDict,
                     learning_rate: optax.Schedule) -> optax.GradientTransformation:
  """Adam as the official recipe (AdamW when weight_decay > 0), or SGD with momentum 0.9."""
  o = config.optim
  if o.name == 'adam':
    if o.weight_decay:
      return optax.adamw(learning_rate, weight_decay=o.weight_decay)
    return optax.adam(learning_rate)
  if o.name == 'sgd':
    return optax.chain(optax.add_decayed_weights(o.weight_decay),
                       optax.sgd(learning_rate, momentum=0.9))
  raise ValueError(f"config.optim.name is {o.name!r}; expected 'adam' or 'sgd'")


# Config entries that fix the shapes of the model's variables and inputs: a workdir saved
# with other values cannot be resumed with these.
_SHAPE_KEYS = ('model', 'dataset.image_size', 'dataset.heatmap_size', 'dataset.input_size')


def _lookup(config: dict, dotted: str):
  for part in dotted.split('.'):
    config = config.get(part) if isinstance(config, dict) else None
  if isinstance(config, dict):  # the compute dtype does not change any shape
    config = {k: v for k, v in config.items() if k != 'dtype'}
  return config


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes ``workdir/config.json``; refuses a workdir saved with another model shape."""
  path = os.path.join(workdir, config_lib.CONFIG_FILE)
  new = json.loads(config.to_json_best_effort())
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      old = json.load(f)
    for key in _SHAPE_KEYS:
      if _lookup(old, key) != _lookup(new, key):
        raise ValueError(
            f'{workdir} holds a run with config.{key} = {_lookup(old, key)} ({path}), but this '
            f'config has {_lookup(new, key)}: refusing to resume it. Use another --workdir.')
  if jax.process_index() == 0:
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(path + '.tmp', 'w') as f:
      json.dump(new, f, indent=2, sort_keys=True)
    tf.io.gfile.rename(path + '.tmp', path, overwrite=True)


def initial_variables(config: ml_collections.ConfigDict, variables: dict) -> dict:
  """``config.init_from``: converted weights (a folder), an official .pth, or an ImageNet one."""
  path = config.init_from
  if not path:
    return variables
  if tf.io.gfile.isdir(path):
    loaded = checkpoints.restore_variables(path, config.model)
  else:
    state = weights.read_state_dict(path)
    backbone = weights.is_classification_checkpoint(state)
    loaded, _ = weights.state_dict_to_variables(
        state, config.model, source=path,
        prefixes=weights.BACKBONE_PREFIXES if backbone else None,
        base=variables if backbone else None)
    logging.info('init_from %s: %s', path, 'backbone only' if backbone else 'all variables')
  return {'params': loaded['params'], 'batch_stats': loaded['batch_stats']}


class _Preemption:
  """Turns SIGTERM into a flag that the loop checks after every step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def any_process(self) -> bool:
    """Whether any process got SIGTERM (all processes must stop at the same step)."""
    if jax.process_count() == 1:
      return self.requested
    flags = multihost_utils.process_allgather(np.array([self.requested]))
    return bool(np.any(flags))


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (resuming from the latest checkpoint in ``workdir``) and returns the final state."""
  from input_pipeline import datasets  # TF-side code, imported where training needs it
  workdir = os.path.abspath(workdir)
  is_main = jax.process_index() == 0

  # Mesh: one data axis over every device of every process.
  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.batch_size)
  rep, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  write_config(config, workdir)

  # Input.
  data_source = datasets.TrainingData(config)
  num_instances = data_source.num_instances
  steps_per_epoch = -(-num_instances // config.batch_size)
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else config.optim.num_epochs * steps_per_epoch)

  # Model, optimizer and state, created replicated.
  model = models.create_model(config.model)
  learning_rate = create_learning_rate_fn(config, steps_per_epoch)
  tx = create_optimizer(config, learning_rate)
  width, height = config_lib.training_input_size(config)

  def init(rng):
    return create_train_state(model, tx, rng, (1, height, width, 3))

  state = jax.jit(init, out_shardings=rep)(jax.random.key(config.seed))
  # A raw uint32 key, replicated like the state: checkpoints save it as a global array.
  rng = jax.jit(lambda: jax.random.PRNGKey(config.seed + 1), out_shardings=rep)()

  # Checkpoint: resume from the latest, or start from config.init_from.
  manager = checkpoints.train_checkpoint_manager(workdir, config.keep_checkpoints)
  start_step = manager.latest_step() or 0
  if start_step:
    target = {'params': state.params, 'batch_stats': state.batch_stats,
              'opt_state': state.opt_state, 'step': state.step, 'rng': rng}
    restored, meta = checkpoints.restore_train_state(manager, start_step, target)
    state = state.replace(params=restored['params'], batch_stats=restored['batch_stats'],
                          opt_state=restored['opt_state'], step=restored['step'])
    rng = restored['rng']
    logging.info('resumed from %s at step %d', manager.directory, start_step)
    if is_main:
      print(f'Resumed from checkpoint step {start_step} (loss {meta.get("loss")}).', flush=True)
  else:
    variables = initial_variables(config, {'params': state.params,
                                           'batch_stats': state.batch_stats})
    variables = jax.device_put(variables, rep)
    state = state.replace(params=variables['params'], batch_stats=variables['batch_stats'])

  def save(step: int, loss: float, stream) -> None:
    tree = {'params': state.params, 'batch_stats': state.batch_stats,
            'opt_state': state.opt_state, 'step': state.step, 'rng': rng}
    checkpoints.save_train_state(manager, step, tree, {
        'step': step, 'loss': loss, 'instances': step * config.batch_size,
        'skipped_images': getattr(stream, 'skipped', 0), 'time': time.time()})

  # Periodic evaluation with the eval job's code; the best checkpoint by AP in workdir/best/.
  best_manager = checkpoints.best_checkpoint_manager(workdir)
  best_ap = _best_ap(best_manager)
  evaluator = eval_lib.make_evaluator(config, mesh) if config.eval_every_steps >= 0 else None

  def evaluate(step: int) -> None:
    nonlocal best_ap
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    metrics = evaluator.evaluate(variables, workdir, step=step, writer=writer)
    if metrics['AP'] > best_ap:
      best_ap = metrics['AP']
      checkpoints.save_train_state(best_manager, step, variables, {'step': step, **metrics})
      if is_main:
        print(f'New best AP {best_ap:.4f} at step {step}: saved in {best_manager.directory}',
              flush=True)

  # Update step: a pure function, jitted over the mesh; the old state's buffers are reused.
  step_fn, batch_keys = make_train_step(config)
  update = jax.jit(step_fn, in_shardings=(rep, data, rep), out_shardings=(rep, rep),
                   donate_argnums=(0,))
  writer = tf.summary.create_file_writer(workdir) if is_main else None
  stream = data_source.batches(start_step=start_step, process_index=jax.process_index(),
                               process_count=jax.process_count())
  if is_main:
    print(f'Training {total_steps} steps ({steps_per_epoch} per epoch of {num_instances} '
          f'{data_source.what}, global batch {config.batch_size} on {jax.device_count()} '
          f'device(s), {jax.process_count()} process(es)); workdir {workdir}', flush=True)

  pending: list[tuple[int, dict]] = []  # metrics not yet fetched from the devices
  last_loss, saved_step = float('nan'), start_step
  last_parts: dict[str, float] = {}  # the loss's parts and the gradient norm, for TensorBoard
  timer_start, timer_steps = None, 0

  def fetch() -> float:
    """Pulls pending metrics to the host; stops the run at the first non-finite loss."""
    nonlocal last_loss, last_parts
    for step, metrics in pending:
      loss = float(metrics['loss'])
      if not (np.isfinite(loss) and bool(metrics['finite'])):
        what = (f'the loss is {loss}' if not np.isfinite(loss) else
                'the parameters became NaN or inf')
        raise NonFiniteLossError(
            f'{what} at step {step + 1}: stopped without saving it; the last checkpoint '
            f'(step {saved_step}) is kept. Lower config.optim.learning_rate (now '
            f'{config.optim.learning_rate}) or check the data of step {step}.')
      last_loss = loss
    if pending:
      last_parts = {k: float(v) for k, v in pending[-1][1].items() if k not in ('loss', 'finite')}
    pending.clear()
    return last_loss

  with _Preemption() as preemption:
    for step in range(start_step, total_steps):
      local = next(stream)
      batch = sharding.global_batch(
          {k: local[k] for k in batch_keys}, mesh)
      state, metrics = update(state, batch, jax.random.fold_in(rng, step))
      pending.append((step, metrics))
      done = step + 1
      if timer_start is None:  # the first step compiles: time from its end
        jax.block_until_ready(metrics)
        timer_start, timer_steps = time.time(), done
      preempted = preemption.any_process()
      if done % config.log_every_steps == 0 or done == total_steps or preempted:
        loss = fetch()
        elapsed = time.time() - timer_start
        rate = (done - timer_steps) / elapsed if elapsed > 0 and done > timer_steps else 0.0
        lr = float(learning_rate(step))
        if is_main:
          eta = _format_eta((total_steps - done) / rate) if rate else '?'
          print(f'step {done}/{total_steps} loss {loss:.6f} lr {lr:.2e} '
                f'{rate * config.batch_size:.1f} inst/s {1 / rate if rate else 0:.3f} s/step '
                f'ETA {eta}', flush=True)
          with writer.as_default(step=done):
            tf.summary.scalar('train/loss', loss)
            for name, value in last_parts.items():
              tf.summary.scalar(f'train/{name}', value)
            tf.summary.scalar('train/learning_rate', lr)
            tf.summary.scalar('train/instances_per_second', rate * config.batch_size)
            tf.summary.scalar('train/step_time', 1 / rate if rate else 0.0)
          writer.flush()
      if done % config.checkpoint_every_steps == 0 or done == total_steps or preempted:
        loss = fetch()
        save(done, loss, stream)
        saved_step = done
      every = config.eval_every_steps
      if not preempted and every >= 0 and (
          done == total_steps or (every > 0 and done % every == 0)):
        evaluate(done)
        timer_start, timer_steps = time.time(), done  # the speed excludes evaluations
      if preempted:
        if is_main:
          print(f'SIGTERM: saved the checkpoint of step {saved_step}; exiting. Re-run the same '
                f'command to resume.', flush=True)
        break
  manager.close()
  best_manager.close()
  return state


def _best_ap(best_manager) -> float:
  """The AP of the best checkpoint saved so far (-1 when there is none)."""
  step = best_manager.latest_step()
  return -1.0 if step is None else float(checkpoints.saved_metadata(best_manager, step)['AP'])
