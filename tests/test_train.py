"""launch/train.py end to end on a tiny HRNet: loss, devices, kills, SIGTERM, processes, guards.

Every run is a real subprocess (its own JAX devices and signals) on the synthetic folder.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf

from conftest import REPO
from hrnet_jax import models, weights
import tiny_config

TRAIN = os.path.join(REPO, 'launch', 'train.py')
EVAL = os.path.join(REPO, 'launch', 'eval.py')
TINY = os.path.join(REPO, 'tests', 'tiny_config.py')
PARAM_TOL = 1e-6  # the acceptance list's bound for a resumed run against an uninterrupted one


@pytest.fixture(scope='module', autouse=True)
def session_cache(tmp_path_factory):
  """$HRNET_JAX_CACHE of these runs (compiled programs): this session's, not ~/.cache."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('HRNET_JAX_CACHE', str(tmp_path_factory.mktemp('hrnet_jax_cache')))
    yield


def command(workdir, root, *extra):
  return [sys.executable, TRAIN, f'--config={TINY}', f'--workdir={workdir}',
          f'--config.dataset.root={root}', *extra]


def environment(devices=1):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu')
  env.pop('JAX_NUM_CPU_DEVICES', None)
  return env


def train(workdir, root, *extra, devices=1, expect=0):
  result = subprocess.run(command(workdir, root, *extra), capture_output=True, text=True,
                          timeout=600, env=environment(devices))
  assert result.returncode == expect, result.stdout + result.stderr[-3000:]
  return result


def saved_tree(workdir, step):
  """The tree saved at ``step``, as numpy (whatever device layout saved it)."""
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  checkpointer = ocp.StandardCheckpointer()
  layout = checkpointer.metadata(path).item_metadata.tree
  return checkpointer.restore(path, jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), layout))


def params(workdir, step):
  """The params saved at ``step``."""
  return saved_tree(workdir, step)['params']


def assert_params_close(a, b, atol, rtol=0.0):
  flat_a = dict(ocp.tree.to_flat_dict(a))
  flat_b = dict(ocp.tree.to_flat_dict(b))
  assert flat_a.keys() == flat_b.keys()
  for k in flat_a:
    np.testing.assert_allclose(np.asarray(flat_a[k]), np.asarray(flat_b[k]), atol=atol,
                               rtol=rtol, err_msg=str(k))


def scalars(workdir, tag='train/loss'):
  """{step: value} of a TensorBoard scalar in the event files of ``workdir``."""
  values = {}
  for name in os.listdir(workdir):
    if name.startswith('events.out.tfevents'):
      for event in tf.compat.v1.train.summary_iterator(os.path.join(workdir, name)):
        for value in event.summary.value:
          if value.tag == tag:
            values[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def losses(workdir):
  values = scalars(workdir)
  return [values[k] for k in sorted(values)]


@pytest.fixture(scope='module')
def uninterrupted(synthetic_folder, tmp_path_factory):
  """30 steps on one device, checkpoints and evaluations every 10: the reference run."""
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  train(workdir, synthetic_folder, '--config.num_train_steps=30',
        '--config.checkpoint_every_steps=10', '--config.eval_every_steps=10')
  return workdir


def test_training_lowers_the_loss_and_writes_checkpoints_and_metrics(uninterrupted):
  curve = losses(uninterrupted)
  assert len(curve) == 30
  assert np.mean(curve[-5:]) < 0.8 * np.mean(curve[:5]), curve
  assert sorted(os.listdir(os.path.join(uninterrupted, 'checkpoints'))) == ['10', '20', '30']
  assert os.path.exists(os.path.join(uninterrupted, 'config.json'))


# Device-count and process-count equivalence. Params after many steps are not comparable
# tightly: the float summation order changes with the device count (as with the order of a
# batch on one device), and at the official N(0, 0.001) init some ReLU inputs of the synthetic
# images sit on the kink, so one reordering moves the first update by up to 2.5e-3 of its
# largest element (a discrete jump: permuting the batch on one device gives the same), and
# training amplifies it (x10 a step at SGD lr 1e-2). So these tests run 3 SGD steps at lr 1e-4
# and compare, against one device in one process, what is deterministic to the precision it
# has (measured on 1 vs 4 devices, 1 vs 2 processes and batch orders):
# - the loss of every step, relative (measured <= 1.1e-7; tolerance 1e-5);
# - the change of the BatchNorm statistics in step 1, per leaf against its largest element
#   (measured <= 1.5e-6; tolerance 1e-4);
# - the update of step 1 (params after it minus the initial params), max|u - u1| over all
#   params against max|u1| (measured <= 2.5e-3; tolerance 5e-2, 20x: log-midway between the
#   noise and the smallest bug below).
# lr 1e-4 keeps the later losses as deterministic (at 1e-2 they differ by 5e-5) and the
# params' float32 rounding at 2e-4 of the update.
# The bugs they catch, measured on the first batch of the tiny config: BatchNorm statistics
# per device (2 images) instead of global move the update by 1.29 of its size and the BN
# statistics by 0.29 (the loss by only 1e-5); a gradient not averaged over devices (one
# device's) the update by 3.7, summed instead of averaged by 4.7; a process feeding the other
# one's images the loss by 9e-2, the BN statistics by 0.85 and the update by 1.6. Each is at
# least 25x over a tolerance.
EQUIVALENCE = ('--config.optim.name=sgd', '--config.optim.learning_rate=0.0001',
               '--config.num_train_steps=3', '--config.checkpoint_every_steps=1',
               '--config.keep_checkpoints=3')
LOSS_RTOL = 1e-5
BN_RTOL = 1e-4
UPDATE_RTOL = 5e-2


def first_step(workdir, initial):
  """The losses of every step, and the params' and BN statistics' changes in step 1."""
  saved = saved_tree(workdir, 1)
  change = {}
  for part in ('params', 'batch_stats'):
    start = dict(ocp.tree.to_flat_dict(initial[part]))
    change[part] = {k: np.asarray(v, np.float64) - np.asarray(start[k], np.float64)
                    for k, v in ocp.tree.to_flat_dict(saved[part]).items()}
  return {'losses': losses(workdir), 'update': change['params'],
          'batch_stats': change['batch_stats']}


@pytest.fixture(scope='module')
def one_device_step(synthetic_folder, tmp_path_factory):
  """The reference of the equivalence tests: one device in one process."""
  workdir = str(tmp_path_factory.mktemp('one_device'))
  train(workdir, synthetic_folder, *EQUIVALENCE)
  config = tiny_config.get_config()
  model = models.create_model(config.model)
  initial = jax.jit(lambda: model.init(jax.random.key(config.seed), np.zeros((1, 64, 64, 3)),
                                       train=False))()
  reference = first_step(workdir, initial)
  assert len(reference['losses']) == 3
  # The step moved the params by lr x gradient (~1e-6), and these are the run's initial
  # params: other ones would differ from them by ~1e-3.
  moved = max(np.abs(u).max() for u in reference['update'].values())
  assert 1e-8 < moved < 1e-5, moved
  return initial, reference


def assert_same_training(workdir, one_device_step):
  """The run in ``workdir`` trains as ``one_device_step`` did, to the tolerances above."""
  initial, reference = one_device_step
  run = first_step(workdir, initial)
  assert len(run['losses']) == len(reference['losses'])
  loss = np.max(np.abs(np.subtract(run['losses'], reference['losses'])) /
                np.abs(reference['losses']))
  bn = {k: np.abs(run['batch_stats'][k] - v).max() / np.abs(v).max()
        for k, v in reference['batch_stats'].items()}
  worst_bn = max(bn, key=bn.get)
  u, u1 = run['update'], reference['update']
  assert u.keys() == u1.keys()
  update = (max(np.abs(u[k] - u1[k]).max() for k in u1) /
            max(np.abs(v).max() for v in u1.values()))
  print(f'relative differences: loss {loss:.2e}, BN statistics {bn[worst_bn]:.2e} '
        f'({worst_bn}), step-1 update {update:.2e}')
  assert loss <= LOSS_RTOL, (run['losses'], reference['losses'])
  assert bn[worst_bn] <= BN_RTOL, (worst_bn, bn[worst_bn])
  assert update <= UPDATE_RTOL, update


def test_four_devices_train_as_one(one_device_step, synthetic_folder, tmp_path):
  train(str(tmp_path), synthetic_folder, *EQUIVALENCE, devices=4)
  assert_same_training(str(tmp_path), one_device_step)


def wait_for_checkpoint(process, workdir, step, timeout=300):
  path = os.path.join(workdir, 'checkpoints', str(step))
  deadline = time.time() + timeout
  while not os.path.isdir(path):
    assert process.poll() is None, process.communicate()
    assert time.time() < deadline
    time.sleep(0.05)


def test_sigterm_then_sigkill_then_resume_equals_the_uninterrupted_run(
    uninterrupted, synthetic_folder, tmp_path):
  workdir = str(tmp_path)
  args = ('--config.num_train_steps=30', '--config.checkpoint_every_steps=10')
  env = environment()
  # SIGTERM after the first checkpoint: saves where it is and exits cleanly.
  process = subprocess.Popen(command(workdir, synthetic_folder, *args), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  wait_for_checkpoint(process, workdir, 10)
  process.send_signal(signal.SIGTERM)
  out, err = process.communicate(timeout=300)
  assert process.returncode == 0, err[-3000:]
  assert 'SIGTERM: saved the checkpoint of step' in out
  stopped = max(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')))
  assert 10 < stopped < 30, 'the run ended before SIGTERM arrived'
  # Resumed, then SIGKILL right after its next checkpoint: no chance to clean up.
  process = subprocess.Popen(command(workdir, synthetic_folder, *args), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  wait_for_checkpoint(process, workdir, 20)
  process.kill()
  process.communicate()
  assert not os.path.isdir(os.path.join(workdir, 'checkpoints', '30'))
  result = train(workdir, synthetic_folder, *args)
  assert 'Resumed from checkpoint step' in result.stdout
  assert_params_close(params(workdir, 30), params(uninterrupted, 30), atol=PARAM_TOL)


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_process_job_trains_and_checkpoints(one_device_step, synthetic_folder, tmp_path):
  workdir = str(tmp_path)
  address = f'localhost:{free_port()}'
  processes = [subprocess.Popen(
      command(workdir, synthetic_folder, *EQUIVALENCE, f'--coordinator_address={address}',
              '--num_processes=2', f'--process_id={i}'),
      env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for p, (out, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
  assert 'on 2 device(s), 2 process(es)' in outputs[0][0]
  # Logs from process 0 only (gloo itself prints a connection line in each process).
  assert 'step 3/3' in outputs[0][0]
  assert 'Training' not in outputs[1][0] and 'step ' not in outputs[1][0]
  # Each process fed its half of every global batch: the same training as one process.
  assert_same_training(workdir, one_device_step)


def test_a_workdir_of_another_model_shape_is_refused(uninterrupted, synthetic_folder):
  result = train(uninterrupted, synthetic_folder, '--config.model.width=8', expect=1)
  assert 'refusing to resume' in result.stderr and 'width' in result.stderr
  assert sorted(os.listdir(os.path.join(uninterrupted, 'checkpoints'))) == ['10', '20', '30']


def test_a_diverging_run_stops_without_checkpointing_bad_params(synthetic_folder, tmp_path):
  result = train(str(tmp_path), synthetic_folder, '--config.optim.learning_rate=1e30',
                 '--config.num_train_steps=6', '--config.checkpoint_every_steps=1', expect=1)
  assert 'error:' in result.stderr and 'stopped without saving it' in result.stderr
  assert 'NaN or inf' in result.stderr or 'the loss is' in result.stderr
  for step in os.listdir(os.path.join(str(tmp_path), 'checkpoints')):
    for leaf in ocp.tree.to_flat_dict(params(str(tmp_path), step)).values():
      assert np.isfinite(np.asarray(leaf)).all()


def test_periodic_evaluation_keeps_the_best_checkpoint_by_ap(uninterrupted):
  aps = scalars(uninterrupted, 'eval/coco/AP')
  assert sorted(aps) == [10, 20, 30]
  with open(os.path.join(uninterrupted, 'eval', 'val_metrics.json')) as f:
    assert json.load(f)['AP'] == pytest.approx(aps[30], abs=1e-7)
  best = os.listdir(os.path.join(uninterrupted, 'best'))
  assert len(best) == 1
  first_best = min(step for step, ap in aps.items() if ap == max(aps.values()))
  assert int(best[0]) == first_best
  with open(os.path.join(uninterrupted, 'best', best[0], 'meta', 'metadata')) as f:
    assert json.load(f)['coco/AP'] == pytest.approx(max(aps.values()), abs=1e-7)


def evaluate(*args, devices=1, expect=0):
  result = subprocess.run([sys.executable, EVAL, *args], capture_output=True, text=True,
                          timeout=600, env=environment(devices))
  assert result.returncode == expect, result.stdout + result.stderr[-3000:]
  return result


def results(workdir):
  with open(os.path.join(workdir, 'eval', 'val_keypoints_results.json')) as f:
    return json.load(f)


def assert_same_results(a, b, atol):
  assert [(r['image_id'], r['category_id']) for r in a] == [
      (r['image_id'], r['category_id']) for r in b]
  np.testing.assert_allclose([r['keypoints'] for r in a], [r['keypoints'] for r in b], atol=atol)
  np.testing.assert_allclose([r['score'] for r in a], [r['score'] for r in b], atol=atol)


def test_eval_py_reproduces_training_eval_on_any_device_count_and_from_a_pth(
    uninterrupted, synthetic_folder, tmp_path):
  during_training = results(uninterrupted)  # the step-30 evaluation of the training run
  out = evaluate(f'--workdir={uninterrupted}', '--checkpoint=30').stdout
  assert 'Average Precision' in out and 'step 30' in out
  assert results(uninterrupted) == during_training  # the same code, the same numbers
  evaluate(f'--workdir={uninterrupted}', '--checkpoint=latest', devices=4)
  # Batch 8 split over 4 devices: convolutions sum in another order (float32 noise).
  assert_same_results(results(uninterrupted), during_training, atol=1e-3)

  # The same weights as an official-layout .pth, through --config and --init_from.
  tree = saved_tree(uninterrupted, 30)
  pth = str(tmp_path / 'tiny.pth')
  weights.save_torch_checkpoint({k: tree[k] for k in ('params', 'batch_stats')}, pth)
  evaluate(f'--config={TINY}', f'--config.dataset.root={synthetic_folder}',
           f'--init_from={pth}', f'--workdir={tmp_path / "from_pth"}')
  assert_same_results(results(str(tmp_path / 'from_pth')), during_training, atol=1e-4)


def test_eval_py_clear_errors(uninterrupted, tmp_path):
  result = evaluate(f'--workdir={uninterrupted}', '--checkpoint=7', expect=1)
  assert "no checkpoint '7'" in result.stderr and '[10, 20, 30]' in result.stderr
  empty = tmp_path / 'run'
  empty.mkdir()
  shutil.copy(os.path.join(uninterrupted, 'config.json'), empty / 'config.json')
  result = evaluate(f'--workdir={empty}', expect=1)
  assert 'error: no checkpoint in' in result.stderr
  result = evaluate(f'--workdir={empty}', '--checkpoint=best', expect=1)
  assert 'error: no checkpoint in' in result.stderr and 'best' in result.stderr
  result = evaluate(f'--workdir={tmp_path / "nowhere"}', expect=1)
  assert 'config.json not found' in result.stderr
  result = evaluate(f'--workdir={uninterrupted}', '--config.test.no_such_key=1', expect=2)
  assert 'no_such_key' in result.stderr
