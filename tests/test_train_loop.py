"""The training loop's speed: where it waits, batches made ahead, the compilation cache.

- A multi-process loop waits for the other processes (collectives, metric fetches, saves)
  only after the first step and at log, checkpoint and evaluation steps, counted through
  ``train_lib.wait_for_all`` in real 2-process CPU jobs; SIGTERM to one process still stops
  both at the same step with its checkpoint.
- ``sharding.Prefetcher`` makes global batches in a thread: the loop's thread runs under
  ``jax.transfer_guard('disallow')`` (thread-local in JAX) and trains as without it; errors
  of the thread surface unchanged; checkpoints record the data position of the next step.
- Compiled programs are cached in ``config.compilation_cache_dir``: a second process hits it.

Subprocesses and in-process runs cache compiled programs in a folder of this session
(``$HRNET_JAX_CACHE``), never in the user's ~/.cache.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from conftest import REPO
from hrnet_jax import errors, sharding, tasks, train_lib
from input_pipeline import pipeline
import test_train
import tiny_config

# Runs launch/train.py in this process after wrapping, without changing what they do:
# train_lib.wait_for_all (the step and function of every call), process_allgather (calls
# made outside wait_for_all once the loop started) and JAX's monitoring events (the
# compilation cache's hits and misses). Writes them as JSON to argv[1] at exit.
DRIVER = r'''
import functools, json, runpy, sys
import jax
from jax.experimental import multihost_utils
from hrnet_jax import train_lib

record = {'waits': [], 'allgathers_outside': 0, 'events': {}}
inside = []
real_wait, real_allgather = train_lib.wait_for_all, multihost_utils.process_allgather

def counting_wait(step, fn, *args, **kwargs):
  record['waits'].append([step, getattr(fn, '__name__', repr(fn))])
  inside.append(fn)
  try:
    return real_wait(step, fn, *args, **kwargs)
  finally:
    inside.pop()

@functools.wraps(real_allgather)
def counting_allgather(*args, **kwargs):
  if record['waits'] and not inside:
    record['allgathers_outside'] += 1
  return real_allgather(*args, **kwargs)

def on_event(event, **kwargs):
  record['events'][event] = record['events'].get(event, 0) + 1

train_lib.wait_for_all = counting_wait
multihost_utils.process_allgather = counting_allgather
jax.monitoring.register_event_listener(on_event)
out, sys.argv = sys.argv[1], sys.argv[2:]
try:
  runpy.run_path(sys.argv[0], run_name='__main__')
finally:
  with open(out, 'w') as f:
    json.dump(record, f)
'''


@pytest.fixture(scope='module', autouse=True)
def session_cache(tmp_path_factory):
  """$HRNET_JAX_CACHE of these runs (and their subprocesses): compiled programs, shared."""
  folder = str(tmp_path_factory.mktemp('hrnet_jax_cache'))
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('HRNET_JAX_CACHE', folder)
    yield folder


def driven(record, workdir, root, *extra):
  """The command of launch/train.py on the tiny config, through DRIVER into ``record``."""
  command = test_train.command(workdir, root, *extra)
  return [command[0], '-c', DRIVER, str(record), *command[1:]]


def read_record(path):
  with open(path) as f:
    return json.load(f)


def wait_steps(record):
  return sorted({step for step, _ in record['waits']})


# ------------------------------------------------------------------ waits across processes --


def start_two_processes(tmp_path, root, *extra, env=None):
  """A 2-process CPU job of launch/train.py through DRIVER: (processes, their records)."""
  address = f'localhost:{test_train.free_port()}'
  records = [tmp_path / f'record{i}.json' for i in range(2)]
  processes = [subprocess.Popen(
      driven(records[i], str(tmp_path / 'run'), root, *extra,
             f'--coordinator_address={address}', '--num_processes=2', f'--process_id={i}'),
      env=env or test_train.environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  return processes, records


def finish(processes):
  outputs = [p.communicate(timeout=600) for p in processes]
  for p, (_, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
  return outputs


def test_two_process_job_waits_only_at_sync_steps_and_stops_together_on_sigterm(
    synthetic_folder, tmp_path):
  # JAX's preemption service (on by default): SIGTERM to one process reaches the other in the
  # background, and both stop after the same step without waiting for each other per step.
  workdir = str(tmp_path / 'run')
  processes, records = start_two_processes(
      tmp_path, synthetic_folder, '--config.num_train_steps=40', '--config.log_every_steps=10',
      '--config.checkpoint_every_steps=5')
  test_train.wait_for_checkpoint(processes[0], workdir, 5)
  processes[1].send_signal(signal.SIGTERM)
  outputs = finish(processes)
  assert 'SIGTERM: saved the checkpoint of step' in outputs[0][0]
  stopped = int(outputs[0][0].split('SIGTERM: saved the checkpoint of step ')[1].split(';')[0])
  assert 5 < stopped < 40, 'the run ended before SIGTERM arrived'
  assert max(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints'))) == stopped
  # Where each process waited for the other: after the first step (compiled; the speed is
  # timed from there), at the checkpoint steps (5, 10, ...; logs at 10, 20 ...) and at the
  # step both stopped at. The old loop gathered SIGTERM flags after every step.
  sync = [1] + list(range(5, stopped, 5))
  for path in records:
    record = read_record(path)
    assert wait_steps(record) == sorted(set(sync) | {stopped}), record['waits']
    assert record['allgathers_outside'] == 0


# Both processes of a job with JAX's preemption service off; process 1 gets SIGTERM. Each
# prints what it knew alone after step 1, what they agreed at a log step, and its waits.
FALLBACK = r'''
import json, os, signal, sys, time
from hrnet_jax import sharding, train_lib
sharding.initialize_distributed(sys.argv[1], 2, int(sys.argv[2]))
waits, real_wait = [], train_lib.wait_for_all
def counting_wait(step, fn, *args, **kwargs):
  waits.append([step, fn.__name__])
  return real_wait(step, fn, *args, **kwargs)
train_lib.wait_for_all = counting_wait
with train_lib._Preemption(0) as preemption:
  if sys.argv[2] == '1':
    os.kill(os.getpid(), signal.SIGTERM)
    while not preemption.requested:
      time.sleep(0.01)
  alone = preemption.notified(1)
  print(json.dumps([alone, preemption.agree(1, alone), waits]))
'''


def test_without_the_preemption_service_the_flags_are_gathered_at_sync_steps(tmp_path):
  address = f'localhost:{test_train.free_port()}'
  env = dict(test_train.environment(), JAX_ENABLE_PREEMPTION_SERVICE='false')
  processes = [subprocess.Popen([sys.executable, '-c', FALLBACK, address, str(i)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
  for out, _ in finish(processes):
    alone, agreed, waits = json.loads(out.strip().splitlines()[-1])
    # Neither stops alone (the other would wait for it forever); the one gather agrees.
    assert (alone, agreed, waits) == (False, True, [[1, 'process_allgather']])


# ------------------------------------------------------------------------------ prefetch ---


class Stream:
  """Numbered numpy batches, ``skipped`` growing by one at each batch in ``skips``."""

  def __init__(self, count=None, error_at=None, skips=()):
    self.step, self.skipped = 0, 0
    self.count, self.error_at, self.skips = count, error_at, set(skips)
    self.threads = set()

  def __iter__(self):
    return self

  def __next__(self):
    self.threads.add(threading.current_thread().name)
    if self.step == self.error_at:
      raise pipeline.DataError(f'unreadable image(s) at step {self.step}: bad.jpg')
    if self.count is not None and self.step == self.count:
      raise StopIteration
    self.skipped += self.step in self.skips
    self.step += 1
    return {'image': np.full((2, 3), self.step - 1, np.float32)}


def placer():
  mesh = sharding.data_mesh()
  return lambda local: sharding.global_batch(local, mesh)


def prefetch_threads():
  return [t for t in threading.enumerate() if t.name == 'prefetch_batches']


def test_prefetcher_places_batches_in_order_from_its_own_thread():
  stream = Stream(count=5)
  with sharding.Prefetcher(stream, placer(), depth=2) as batches:
    got = list(batches)
  assert [int(b['image'][0, 0]) for b in got] == [0, 1, 2, 3, 4]
  assert got[0]['image'].sharding == sharding.batch_sharded(sharding.data_mesh())
  assert stream.threads == {'prefetch_batches'}
  assert not prefetch_threads()
  # depth 0: no thread, each batch read when asked.
  stream = Stream(count=3)
  with sharding.Prefetcher(stream, placer(), depth=0) as batches:
    assert [int(b['image'][0, 0]) for b in batches] == [0, 1, 2]
  assert stream.threads == {threading.current_thread().name}
  with pytest.raises(errors.ConfigError, match='prefetch_batches is -1'):
    sharding.Prefetcher(Stream(), placer(), depth=-1)


def test_prefetcher_counts_skipped_images_of_the_batches_taken_not_read_ahead():
  stream = Stream(skips=(1, 2, 3))
  with sharding.Prefetcher(stream, placer(), depth=3) as batches:
    next(batches)
    deadline = time.time() + 60
    while stream.step < 4 and time.time() < deadline:  # the thread read ahead past batch 3
      time.sleep(0.01)
    assert stream.skipped == 3 and batches.skipped == 0
    next(batches)
    assert batches.skipped == 1
    next(batches)
    next(batches)
    assert batches.skipped == 3


def test_prefetcher_raises_the_thread_error_unchanged_and_stops():
  stream = Stream(error_at=3)
  batches = sharding.Prefetcher(stream, placer(), depth=2)
  assert [int(next(batches)['image'][0, 0]) for _ in range(3)] == [0, 1, 2]
  with pytest.raises(pipeline.DataError, match=r'^unreadable image\(s\) at step 3: bad.jpg$'):
    next(batches)
  batches.close()
  assert not prefetch_threads()
  # Stopped early with a full queue and an endless stream: the thread ends too.
  with sharding.Prefetcher(Stream(), placer(), depth=2) as batches:
    next(batches)
    time.sleep(0.2)
  assert not prefetch_threads()


def bad_image_folder(root, tmp_path, config, step):
  """A copy of ``root`` where an image first read at ``step`` (0-based) is corrupt."""
  copy = str(tmp_path / 'data')
  shutil.copytree(root, copy)
  config.dataset.root = copy
  stream = tasks.get_task(config).training_data().open(0, 0, 1)
  earlier = {str(p) for s in range(step)
             for p in stream.instances.image_paths[stream.step_indices(s)]}
  bad = next(str(p) for p in stream.instances.image_paths[stream.step_indices(step)]
             if str(p) not in earlier)
  with open(bad, 'r+b') as f:  # keep the header, destroy the rest
    f.seek(200)
    f.write(b'\x00' * 4000)
    f.truncate(1200)
  return bad


def saved_meta(workdir, step):
  with open(os.path.join(workdir, 'checkpoints', str(step), 'meta', 'metadata')) as f:
    return json.load(f)


def test_loop_thread_makes_no_transfer_and_trains_as_without_prefetch(synthetic_folder,
                                                                      tmp_path):
  config = tiny_config.get_config()
  config.num_train_steps, config.checkpoint_every_steps, config.keep_checkpoints = 4, 1, 4
  config.dataset.skip_bad_images = True
  bad = bad_image_folder(synthetic_folder, tmp_path, config, step=2)
  runs = {}
  for depth in (2, 0):
    config.prefetch_batches = depth
    workdir = str(tmp_path / f'prefetch{depth}')
    if depth:  # thread-local: the loop's thread only; the prefetch thread copies explicitly
      with jax.transfer_guard('disallow'):
        train_lib.train_and_evaluate(config, workdir)
    else:
      train_lib.train_and_evaluate(config, workdir)
    runs[depth] = workdir
    assert not prefetch_threads()
  # The same program on the same batches: the same losses, bit for bit (tolerance 0).
  assert test_train.losses(runs[2]) == test_train.losses(runs[0])
  assert len(test_train.losses(runs[0])) == 4
  # Each checkpoint records the skipped images of the steps it ran, not of those read ahead.
  skipped = [saved_meta(runs[0], s)['skipped_images'] for s in (1, 2, 3, 4)]
  assert [saved_meta(runs[2], s)['skipped_images'] for s in (1, 2, 3, 4)] == skipped
  assert skipped[1] == 0 < skipped[2], skipped  # the bad image is first read at step 3
  # Without skip_bad_images, the pipeline's error reaches the caller unchanged at that step.
  config.dataset.skip_bad_images, config.prefetch_batches = False, 2
  with pytest.raises(pipeline.DataError, match=r'unreadable image\(s\) at step 2: .*' +
                     os.path.basename(bad)):
    train_lib.train_and_evaluate(config, str(tmp_path / 'error'))
  assert not prefetch_threads()
  assert sorted(os.listdir(tmp_path / 'error' / 'checkpoints')) == ['1', '2']


# ----------------------------------------------------------------------- compilation cache --


def test_compilation_cache_folder_default_and_off(monkeypatch):
  config = tiny_config.get_config()
  monkeypatch.setenv('HRNET_JAX_CACHE', '/somewhere')
  assert config.compilation_cache_dir == 'default'
  assert train_lib.compilation_cache_folder(config) == '/somewhere/xla'
  config.compilation_cache_dir = ''
  assert train_lib.compilation_cache_folder(config) == ''
  assert train_lib.use_compilation_cache(config) == ''


def test_a_second_process_hits_the_compilation_cache_of_the_first(synthetic_folder, tmp_path):
  folder = tmp_path / 'xla'
  args = ('--config.num_train_steps=2', f'--config.compilation_cache_dir={folder}')
  records = []
  for run in range(2):
    record = tmp_path / f'record{run}.json'
    result = subprocess.run(driven(record, str(tmp_path / f'run{run}'), synthetic_folder, *args),
                            capture_output=True, text=True, timeout=600,
                            env=test_train.environment())
    assert result.returncode == 0, result.stderr[-3000:]
    records.append((read_record(record)['events'], sorted(os.listdir(folder))))
  (first, written), (second, after) = records
  # The first run compiled and wrote every program (the train step among them), ...
  assert any(name.startswith('jit_update-') for name in written), written
  assert first.get('/jax/compilation_cache/cache_misses', 0) == len(written) > 0, first
  # ... the second compiled none: each one was read from the cache.
  assert second.get('/jax/compilation_cache/cache_hits', 0) == len(written), second
  assert second.get('/jax/compilation_cache/cache_misses', 0) == 0, second
  assert after == written
