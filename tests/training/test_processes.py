"""The trainer as users run it: separate processes, killed processes,
several processes coordinated by jax.distributed, and damaged checkpoints."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import digits
from ra_jax.training import trained
from ra_jax.training import checkpoint, experiment, loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TINY = "configs/digits.py:size=tiny"


def _env(devices: int) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
               "JAX_PROCESS_ID"):
    env.pop(name, None)
  return env


def _train_command(workdir, *overrides):
  return [sys.executable, "-m", "ra_jax.train", "--config", TINY,
          "--workdir", str(workdir), *overrides]


def _final_params(config, workdir):
  exp = experiment.build(config, str(workdir))
  step, state, _ = checkpoint.restore_latest(exp.checkpoints(),
                                             exp.abstract_state())
  return step, jax.tree.map(np.asarray, state.params)


def test_kill_9_then_the_same_command_resumes_to_the_uninterrupted_result(
    tmp_path):
  overrides = ["--config.train.steps=16", "--config.train.checkpoint_every=2",
               "--config.train.keep_checkpoints=3"]
  config = digits.get_config("size=tiny")
  config.train.steps, config.train.checkpoint_every = 16, 2
  config.train.keep_checkpoints = 3
  straight = loop.train_and_evaluate(config, str(tmp_path / "straight"))

  workdir = tmp_path / "killed"
  process = subprocess.Popen(_train_command(workdir, *overrides), cwd=ROOT,
                             env=_env(8), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not (workdir / "checkpoints" / "4").is_dir():
    assert process.poll() is None, "the run ended before it could be killed"
    assert time.time() < deadline
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (workdir / "results.json").exists()  # killed mid-training

  rerun = subprocess.run(_train_command(workdir, *overrides), cwd=ROOT,
                         env=_env(8), capture_output=True, text=True,
                         timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  resumed_from = int(rerun.stdout.split("resumed from step ")[1].split()[0])
  assert 4 <= resumed_from < 16
  resumed = json.load(open(workdir / "results.json"))
  assert resumed["exact"] == straight["exact"]
  step_a, params_a = _final_params(config, tmp_path / "straight")
  step_b, params_b = _final_params(config, workdir)
  assert step_a == step_b == 16
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)


def test_unreadable_checkpoint_is_skipped_with_a_warning_and_kept(
    tmp_path, caplog):
  config = digits.get_config("size=tiny")
  config.train.steps, config.train.checkpoint_every = 4, 2
  first = loop.train_and_evaluate(config, str(tmp_path))
  state_dir = tmp_path / "checkpoints" / "4" / "state"
  for name in os.listdir(state_dir):  # truncated by hand
    if name.startswith("ocdbt") or name == "d":
      subprocess.run(["rm", "-rf", str(state_dir / name)], check=True)

  step, results = trained.evaluate_workdir(str(tmp_path))
  assert step == 2
  assert "checkpoint" in caplog.text and "cannot be restored" in caplog.text
  assert (tmp_path / "checkpoints_unreadable" / "4" / "state").is_dir()
  assert json.load(open(tmp_path / "evaluation" / "step_2.json")) == results
  assert json.load(open(tmp_path / "results.json"))["exact"] == first["exact"]

  again = loop.train_and_evaluate(config, str(tmp_path))  # redoes steps 3-4
  assert again["exact"] == first["exact"]


def test_evaluate_cli_reproduces_the_final_evaluation(tmp_path):
  run = subprocess.run(_train_command(tmp_path), cwd=ROOT, env=_env(2),
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "results written to" in run.stdout and "mAP@10" in run.stdout
  out = subprocess.run(
      [sys.executable, "-m", "ra_jax.evaluate", "--workdir", str(tmp_path)],
      cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "checkpoint step 3" in out.stdout
  trained = json.load(open(tmp_path / "results.json"))
  evaluated = json.load(open(tmp_path / "evaluation" / "step_3.json"))
  assert evaluated["exact"] == trained["exact"]

  wrong = subprocess.run(
      [sys.executable, "-m", "ra_jax.evaluate", "--workdir",
       str(tmp_path / "nothing")], cwd=ROOT, env=_env(2),
      capture_output=True, text=True, timeout=300)
  assert wrong.returncode != 0
  assert "holds no run" in wrong.stderr


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_of_2_devices_follow_one_process_of_4(tmp_path):
  args = ["--config", TINY, "--config.train.steps=4",
          "--config.optim.learning_rate=0.01"]
  single = subprocess.run(
      [sys.executable, "-m", "ra_jax.train", *args, "--workdir",
       str(tmp_path / "one")], cwd=ROOT, env=_env(4), capture_output=True,
      text=True, timeout=300)
  assert single.returncode == 0, single.stderr[-3000:]
  double = subprocess.run(
      ["bash", "launch/local.sh", "--num_processes", "2",
       "--devices_per_process", "2", "--port", str(_free_port()),
       "--python", sys.executable, "--", *args, "--workdir",
       str(tmp_path / "two")], cwd=ROOT, env=_env(1), capture_output=True,
      text=True, timeout=300)
  assert double.returncode == 0, double.stderr[-3000:]
  assert "process 0 of 2: 2 local / 4 global" in double.stderr
  assert double.stdout.count("results written to") == 1  # process 0 only

  def losses(name):
    return [json.loads(l)["train/loss"]
            for l in open(tmp_path / name / "metrics.jsonl")]
  assert len(losses("two")) == 4
  np.testing.assert_allclose(losses("two"), losses("one"), rtol=1e-5)
  one = json.load(open(tmp_path / "one" / "results.json"))
  two = json.load(open(tmp_path / "two" / "results.json"))
  assert two["exact"]["map"] == pytest.approx(one["exact"]["map"], abs=1e-4)
  assert (tmp_path / "two" / "logs" / "process_1.log").exists()
