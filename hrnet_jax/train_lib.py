"""Training: ``train_and_evaluate`` and the pieces it is made of.

The train step itself is the task's pure function (``hrnet_jax/steps.py``); this module
creates or restores the state, feeds the step over the mesh, saves checkpoints, runs the
config's evaluators and keeps the best checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any, Callable, Iterator, TypeVar

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import optax
import tensorflow as tf

from hrnet_jax import (checkpoints, config_lib, errors, evaluators, models, optim, sharding, tasks,
                       weights, zoo)
from hrnet_jax.steps import TrainState, create_train_state
from input_pipeline import coco, datasets


_T = TypeVar('_T')


class NonFiniteLossError(errors.UserError):
  """The loss became NaN or inf; no checkpoint of the bad parameters was written."""


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
  new = json.loads(config.to_json_best_effort(sort_keys=True))
  if tf.io.gfile.exists(path):
    old = coco.read_json(path)
    for key in _SHAPE_KEYS:
      if _lookup(old, key) != _lookup(new, key):
        raise errors.UserError(
            f'{workdir} holds a run with config.{key} = {_lookup(old, key)} ({path}), but this '
            f'config has {_lookup(new, key)}: refusing to resume it. Use another --workdir.')
  if jax.process_index() == 0:
    coco.write_json(path, new, indent=2)


def initial_variables(config: ml_collections.ConfigDict, variables: dict) -> dict:
  """``config.init_from``: a zoo name or URL, converted weights (a folder), a pose .pth (the
  official or mmpose layout), or an ImageNet one (its backbone)."""
  if not config.init_from:
    return variables
  path = zoo.weights_path(config.init_from)
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


def wait_for_all(step: int, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
  """``fn(*args, **kwargs)``, a call that waits for every process, made after step ``step``.

  Every such call of the loop goes through here: metrics fetched from the devices (their
  steps hold collectives), checkpoint saves, evaluations and the fallback preemption check.
  The loop makes them only after the first step (compiled), at log, checkpoint and
  evaluation steps and on preemption; between them it never waits (a test counts them).
  """
  del step  # for the record of where the loop waits
  return fn(*args, **kwargs)


class _Preemption:
  """SIGTERM (a preemption notice) as the step after which every process saves and exits.

  One process: a SIGTERM handler sets a flag, read after every step. Several processes:
  JAX's preemption service (of ``jax.distributed``) catches SIGTERM in any process and lets
  the processes agree on a step in the background; ``reached_preemption_sync_point``, asked
  after every step, reads only local state and never waits. With the service off, each
  process's flag is gathered at the steps where the processes wait for each other anyway
  (log, checkpoint and evaluation steps).
  """

  def __init__(self, start_step: int):
    self.requested = False
    self._previous = None
    self._service = False
    if jax.process_count() > 1:
      try:  # started by jax.distributed unless jax_enable_preemption_service is off
        self.requested = multihost_utils.reached_preemption_sync_point(start_step)
        self._service = True
      except RuntimeError:
        pass

  def __enter__(self):
    if not self._service and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def notified(self, done: int) -> bool:
    """Whether every process stops after step ``done``, as far as known without waiting."""
    if self._service:
      return self.requested or multihost_utils.reached_preemption_sync_point(done)
    return self.requested and jax.process_count() == 1

  def agree(self, done: int, preempted: bool) -> bool:
    """At a step where all processes wait anyway: whether any of them got SIGTERM."""
    if self._service or jax.process_count() == 1:
      return preempted
    flags = wait_for_all(done, multihost_utils.process_allgather, np.array([self.requested]))
    return bool(np.any(flags))


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def restore_or_initialize(config: ml_collections.ConfigDict, task: tasks.Task,
                          tx: optax.GradientTransformation, manager,
                          replicated: jax.sharding.Sharding) -> tuple[TrainState, jax.Array, int]:
  """The state, RNG and step of the latest checkpoint, or new ones (from ``config.init_from``).

  Everything is created replicated over the mesh; the RNG is a raw uint32 key, so checkpoints
  save it as a global array.
  """
  model = models.create_model(config.model)
  width, height = task.input_size
  state = jax.jit(lambda: create_train_state(model, tx, jax.random.key(config.seed),
                                             (1, height, width, 3)), out_shardings=replicated)()
  rng = jax.jit(lambda: jax.random.PRNGKey(config.seed + 1), out_shardings=replicated)()
  step = manager.latest_step() or 0
  if not step:
    variables = initial_variables(config, {'params': state.params,
                                           'batch_stats': state.batch_stats})
    variables = jax.device_put(variables, replicated)
    return state.replace(**variables), rng, 0
  restored, meta = checkpoints.restore_train_state(manager, step, _checkpoint_tree(state, rng))
  state = state.replace(params=restored['params'], batch_stats=restored['batch_stats'],
                        opt_state=restored['opt_state'], step=restored['step'])
  logging.info('resumed from %s at step %d', manager.directory, step)
  if jax.process_index() == 0:
    print(f'Resumed from checkpoint step {step} (loss {meta.get("loss")}).', flush=True)
  return state, restored['rng'], step


def _checkpoint_tree(state: TrainState, rng: jax.Array) -> dict[str, Any]:
  """What a training checkpoint holds."""
  return {'params': state.params, 'batch_stats': state.batch_stats,
          'opt_state': state.opt_state, 'step': state.step, 'rng': rng}


def _variables(state: TrainState) -> dict[str, Any]:
  return {'params': state.params, 'batch_stats': state.batch_stats}


class MetricsBuffer:
  """Metrics of queued steps: fetched from the devices only when asked, checked, logged.

  Steps are dispatched without waiting for them; ``fetch`` pulls every pending step's
  metrics at once (one explicit transfer), stops the run at the first non-finite loss, and
  ``log`` prints the loss, learning rate, speed and ETA and writes TensorBoard scalars
  (process 0). The learning rate is the one each step used (a metric of the step).
  """

  def __init__(self, config: ml_collections.ConfigDict, total_steps: int, writer,
               saved_step: int):
    self.config, self.total_steps = config, total_steps
    self.writer, self.saved_step = writer, saved_step
    self.pending: list[tuple[int, dict]] = []
    self.loss, self.learning_rate, self.parts = float('nan'), float('nan'), {}
    self.timer_start, self.timer_steps = time.time(), 0

  def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
    """Queues the metrics of ``step`` (0-based) without waiting for them."""
    self.pending.append((step, metrics))

  def restart_timer(self, done: int) -> None:
    """Speed is measured from here (after compiling, and after each evaluation)."""
    self.timer_start, self.timer_steps = time.time(), done

  def fetch(self) -> float:
    """Pulls pending metrics to the host; the last loss. Raises on a non-finite one."""
    pending, self.pending = jax.device_get(self.pending), []
    for step, metrics in pending:
      loss = float(metrics['loss'])
      if not (np.isfinite(loss) and bool(metrics['finite'])):
        what = (f'the loss is {loss}' if not np.isfinite(loss) else
                'the parameters became NaN or inf')
        raise NonFiniteLossError(
            f'{what} at step {step + 1}: stopped without saving it; the last checkpoint '
            f'(step {self.saved_step}) is kept. Lower config.optim.learning_rate (now '
            f'{self.config.optim.learning_rate}) or check the data of step {step}.')
      self.loss = loss
    if pending:
      last = pending[-1][1]
      self.learning_rate = float(last['learning_rate'])
      self.parts = {k: float(v) for k, v in last.items()
                    if k not in ('loss', 'finite', 'learning_rate')}
    return self.loss

  def log(self, done: int) -> None:
    """Fetches, then prints and records the loss, learning rate, speed and ETA at ``done``."""
    loss = self.fetch()
    elapsed = time.time() - self.timer_start
    rate = (done - self.timer_steps) / elapsed if elapsed > 0 and done > self.timer_steps else 0.
    lr = self.learning_rate
    if jax.process_index() != 0:
      return
    batch = self.config.batch_size
    eta = _format_eta((self.total_steps - done) / rate) if rate else '?'
    print(f'step {done}/{self.total_steps} loss {loss:.6f} lr {lr:.2e} {rate * batch:.1f} '
          f'inst/s {1 / rate if rate else 0:.3f} s/step ETA {eta}', flush=True)
    with self.writer.as_default(step=done):
      tf.summary.scalar('train/loss', loss)
      for name, value in self.parts.items():
        tf.summary.scalar(f'train/{name}', value)
      tf.summary.scalar('train/learning_rate', lr)
      tf.summary.scalar('train/instances_per_second', rate * batch)
      tf.summary.scalar('train/step_time', 1 / rate if rate else 0.0)
    self.writer.flush()


class BestCheckpoint:
  """Keeps the variables that scored best on ``config.best_metric`` in ``workdir/best/``."""

  def __init__(self, workdir: str, metric: str):
    self.metric = metric
    self.manager = checkpoints.best_checkpoint_manager(workdir)
    step = self.manager.latest_step()
    saved = {} if step is None else checkpoints.saved_metadata(self.manager, step)
    self.best = float(saved.get(metric, -np.inf))

  def update(self, step: int, variables: dict, metrics: dict[str, float]) -> None:
    """Saves ``variables`` if ``metrics[metric]`` beats the best so far."""
    if not self.metric or metrics[self.metric] <= self.best:
      return
    self.best = metrics[self.metric]
    checkpoints.save_train_state(self.manager, step, variables, {'step': step, **metrics})
    if jax.process_index() == 0:
      print(f'New best {self.metric} {self.best:.4f} at step {step}: saved in '
            f'{self.manager.directory}', flush=True)


def save_checkpoint(manager, step: int, state: TrainState, rng: jax.Array, loss: float,
                    stream: Iterator, batch_size: int) -> None:
  """Saves the train state at ``step`` with its loss and data position as metadata.

  The data position is that of step ``step``, the next one to run: ``step * batch_size``
  instances, and the images ``stream`` (a ``sharding.Prefetcher``) skipped up to it.
  """
  checkpoints.save_train_state(manager, step, _checkpoint_tree(state, rng), {
      'step': step, 'loss': loss, 'instances': step * batch_size,
      'skipped_images': getattr(stream, 'skipped', 0), 'time': time.time()})


def _due(done: int, every: int, total: int) -> bool:
  """Whether a periodic action runs after step ``done`` (every > 0: each ``every``; 0: last)."""
  return every >= 0 and (done == total or (every > 0 and done % every == 0))


def _update_fn(step_fn, learning_rate: optax.Schedule):
  """The task's step with the RNG of the state's step folded in, and the learning rate it used.

  The step number comes from the state on the devices: no host-to-device copy per step.
  """

  def update(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
    state_after, metrics = step_fn(state, batch, jax.random.fold_in(rng, state.step))
    return state_after, {**metrics, 'learning_rate': learning_rate(state.step)}
  return update


def _evaluate(done: int, evals: dict, state: TrainState, best: BestCheckpoint, workdir: str,
              writer) -> None:
  """Runs the evaluators after step ``done``, writes their metrics, keeps the best variables."""
  outputs = evaluators.run_all(evals, _variables(state))
  best.update(done, _variables(state), evaluators.write(outputs, workdir, step=done,
                                                        writer=writer))


COMPILATION_CACHE_DEFAULT = 'default'  # config.compilation_cache_dir: <cache folder>/xla


def compilation_cache_folder(config: ml_collections.ConfigDict) -> str:
  """Where ``config.compilation_cache_dir`` keeps compiled programs ('' : nowhere).

  'default' is ``xla/`` in the hrnet_jax cache folder (``$HRNET_JAX_CACHE`` or
  ``~/.cache/hrnet_jax``), where the synthetic data sets are made too.
  """
  folder = config.get('compilation_cache_dir', COMPILATION_CACHE_DEFAULT)  # older config.json
  if folder == COMPILATION_CACHE_DEFAULT:
    return os.path.join(datasets.cache_dir(), 'xla')
  return os.path.expanduser(folder)


def use_compilation_cache(config: ml_collections.ConfigDict) -> str:
  """Turns on JAX's persistent compilation cache in ``compilation_cache_folder``; the folder.

  Every program is cached, however fast it compiled or small it is (CPU programs too), so
  a restarted or resumed run, an evaluation or the demo of the same model skips compiling.
  '' leaves JAX's own setting (no cache unless ``JAX_COMPILATION_CACHE_DIR`` is set). Takes
  effect for the first program compiled after it; JAX keeps the first folder of a process.
  """
  folder = compilation_cache_folder(config)
  if not folder:
    return ''
  jax.config.update('jax_compilation_cache_dir', folder)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
  logging.info('compilation cache: %s', folder)
  return folder


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (resuming from the latest checkpoint in ``workdir``) and returns the final state."""
  use_compilation_cache(config)
  workdir = os.path.abspath(workdir)
  is_main = jax.process_index() == 0
  task = tasks.get_task(config)

  # Mesh: one data axis over every device of every process.
  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.batch_size)
  rep, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  evaluators.check_best_metric(config)
  write_config(config, workdir)

  # Input.
  train_data = task.training_data()
  steps_per_epoch = -(-train_data.count // config.batch_size)
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else config.optim.num_epochs * steps_per_epoch)

  # State: the latest checkpoint, or new (config.init_from).
  learning_rate = optim.create_learning_rate_fn(config, steps_per_epoch)
  manager = checkpoints.train_checkpoint_manager(workdir, config.keep_checkpoints)
  state, rng, start_step = restore_or_initialize(config, task, optim.create_optimizer(
      config, learning_rate), manager, rep)

  # Update step: the task's pure function, jitted over the mesh; old buffers are reused.
  update = jax.jit(_update_fn(task.train_step(), learning_rate), in_shardings=(rep, data, rep),
                   out_shardings=(rep, rep), donate_argnums=(0,))

  # Evaluators of config.evals, and the best checkpoint by config.best_metric.
  evals = evaluators.from_config(config, task, mesh) if config.eval_every_steps >= 0 else {}
  best = BestCheckpoint(workdir, config.best_metric)

  # Loop. A thread makes the global batches ahead of the step (config.prefetch_batches); the
  # loop waits for the devices or the other processes only through wait_for_all.
  writer = tf.summary.create_file_writer(workdir) if is_main else None
  log = MetricsBuffer(config, total_steps, writer, saved_step=start_step)
  stream = train_data.open(start_step, jax.process_index(), jax.process_count())
  place = lambda local: sharding.global_batch({k: local[k] for k in task.batch_keys}, mesh)
  if is_main:
    print(f'Training {total_steps} steps ({steps_per_epoch} per epoch of {train_data.count} '
          f'{train_data.what}, global batch {config.batch_size} on {jax.device_count()} '
          f'device(s), {jax.process_count()} process(es)); workdir {workdir}', flush=True)
  with _Preemption(start_step) as preemption, sharding.Prefetcher(
      stream, place, config.prefetch_batches) as batches:
    for step in range(start_step, total_steps):
      state, metrics = update(state, next(batches), rng)
      log.add(step, metrics)
      done = step + 1
      if step == start_step:  # compiled: the speed is measured from here
        wait_for_all(done, jax.block_until_ready, metrics)
        log.restart_timer(done)
      preempted = preemption.notified(done)
      log_now = _due(done, config.log_every_steps, total_steps)
      save_now = _due(done, config.checkpoint_every_steps, total_steps)
      eval_now = bool(evals) and _due(done, config.eval_every_steps, total_steps)
      if log_now or save_now or eval_now:
        preempted = preemption.agree(done, preempted)
      if log_now or preempted:
        wait_for_all(done, log.log, done)
      if save_now or preempted:
        loss = wait_for_all(done, log.fetch)
        wait_for_all(done, save_checkpoint, manager, done, state, rng, loss, batches,
                     config.batch_size)
        log.saved_step = done
      if eval_now and not preempted:
        wait_for_all(done, _evaluate, done, evals, state, best, workdir, writer)
        log.restart_timer(done)  # the speed excludes evaluations
      if preempted:
        if is_main:
          print(f'SIGTERM: saved the checkpoint of step {done}; exiting. Re-run the same '
                f'command to resume.', flush=True)
        break
  manager.close()
  best.manager.close()
  return state
