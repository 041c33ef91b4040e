"""The trainer as users run it: separate processes, killed processes,
several processes coordinated by jax.distributed, and damaged checkpoints."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ra_jax.trained import evaluate_workdir, TrainedRun
from ra_jax.training import loop
from tests import runs

ROOT = runs.ROOT
_env = runs.cli_env


def _final_params(config, workdir):
  run = TrainedRun(str(workdir), config)
  return run.step, jax.tree.map(np.asarray, run.state.params)


def _preemptible(workdir, *extra):
  """`ra_jax.train` on the shared run's configuration, 60 steps logged
  every 10, no periodic checkpoints: a SIGTERM after the first log lands
  mid-run."""
  return ["-m", "ra_jax.train", *runs.tiny_flags(), "--workdir",
          str(workdir), "--config.train.steps=60",
          "--config.train.log_every=10", "--config.eval.every=0",
          "--config.train.checkpoint_every=100000", *extra]


def _sigterm_after_first_log(command, workdir, env):
  """Starts `command`, sends SIGTERM once metrics.jsonl appears; (exit
  status, stderr, seconds from the signal to the exit)."""
  process = subprocess.Popen(command, cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  deadline = time.time() + 240
  while not (workdir / "metrics.jsonl").exists():
    assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.time() < deadline
    time.sleep(0.02)
  process.send_signal(signal.SIGTERM)
  start = time.time()
  _, stderr = process.communicate(timeout=120)
  return process.returncode, stderr, time.time() - start


def _final_state(workdir):
  run = TrainedRun(str(workdir))
  return run.step, jax.tree.map(np.asarray, run.variables)


@pytest.mark.slow
def test_sigterm_then_kill_9_then_the_same_command_ends_bit_identical(
    tmp_path):
  """A real SIGTERM to a real training process: it saves the step it is
  at and exits 143 within seconds saying so. The same command resumes from
  it; killed with -9 mid-run (no checkpoint since), it resumes from it
  again, and ends where an uninterrupted run ends, to the bit."""
  straight = runs.cli(*_preemptible(tmp_path / "straight")[1:])
  assert straight.returncode == 0, straight.stderr[-3000:]
  workdir = tmp_path / "stopped"
  command = [sys.executable, *_preemptible(workdir)]
  status, stderr, seconds = _sigterm_after_first_log(command, workdir,
                                                     _env(1))
  assert status == 143, stderr[-3000:]
  assert seconds < 30  # within the notice, the save included
  line = stderr.strip().splitlines()[-1]
  step = int(line.split("after step ")[1].split(":")[0])
  assert line == (f"ra_jax.train: stopped by SIGTERM after step {step}:"
                  f" checkpoint {step} saved in {workdir}/checkpoints; run"
                  " the same command to resume")
  assert 10 <= step < 60 and (workdir / "checkpoints" / str(step)).is_dir()
  assert not (workdir / "results.json").exists()

  killed = subprocess.Popen(command, cwd=ROOT, env=_env(1),
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while _logged_steps(workdir)[-1] <= step:  # a step past the checkpoint
    assert killed.poll() is None, "the run ended before it could be killed"
    assert time.time() < deadline
    time.sleep(0.02)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  assert not (workdir / "results.json").exists()

  rerun = runs.cli(*command[2:])
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f"resumed from step {step}" in rerun.stdout
  assert "results written to" in rerun.stdout and "mAP@10" in rerun.stdout
  step_a, state_a = _final_state(tmp_path / "straight")
  step_b, state_b = _final_state(workdir)
  assert step_a == step_b == 60
  jax.tree.map(np.testing.assert_array_equal, state_a, state_b)
  # Steps after the checkpoint are logged by each run that took them.
  logged = _logged_steps(workdir)
  assert logged.count(60) == 1 and logged.count(step + 10 - step % 10) >= 2


def _logged_steps(workdir) -> list:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return [0]
  return [json.loads(line)["step"] for line in open(path)
          if line.endswith("\n")] or [0]


@pytest.mark.slow
def test_sigterm_to_two_processes_saves_one_agreed_step(tmp_path):
  """launch/local.sh forwards TERM to its processes; jax's preemption
  service has them agree on one step, both save it and exit 143, and the
  same launch resumes both from it."""
  workdir = tmp_path / "two"
  # 240 steps: the processes agree on a step some seconds after the signal
  # (at 60 steps the run sometimes ended first, exiting 0).
  launch = ["bash", "launch/local.sh", "--num_processes", "2",
            "--devices_per_process", "1", "--port", str(runs.free_port()),
            "--python", sys.executable, "--",
            *_preemptible(workdir, "--config.train.steps=240")[2:]]
  status, stderr, seconds = _sigterm_after_first_log(launch, workdir,
                                                     _env(1))
  assert status == 143, stderr[-3000:]
  assert seconds < 30
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                 if p.name.isdigit())
  saved = max(steps)
  assert 10 <= saved < 240
  assert f"checkpoint {saved} saved" in stderr
  log = (workdir / "logs" / "process_1.log").read_text()
  assert "Traceback" not in log
  launch[launch.index("--port") + 1] = str(runs.free_port())
  # Resumed to a few steps past the saved one: what is tested is where both
  # processes start (steps are a duration, not part of a run's identity).
  launch[-1] = f"--config.train.steps={saved + 3}"
  again = subprocess.run(launch, cwd=ROOT, env=_env(1), capture_output=True,
                         text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"resumed from step {saved}" in again.stdout
  assert (workdir / "results.json").exists()


def test_unreadable_checkpoint_is_skipped_with_a_warning_and_kept(
    digits_run, caplog):
  workdir = digits_run
  first = json.load(open(os.path.join(workdir, "results.json")))
  state_dir = os.path.join(workdir, "checkpoints", "8", "state")
  for name in os.listdir(state_dir):  # truncated by hand
    if name.startswith("ocdbt") or name == "d":
      subprocess.run(["rm", "-rf", os.path.join(state_dir, name)], check=True)

  step, results = evaluate_workdir(workdir)
  assert step == 4
  assert "checkpoint" in caplog.text and "cannot be restored" in caplog.text
  assert os.path.isdir(os.path.join(workdir, "checkpoints_unreadable", "8",
                                    "state"))
  assert json.load(open(os.path.join(workdir, "evaluation",
                                     "step_4.json"))) == results
  assert json.load(open(os.path.join(workdir, "results.json"))) == first

  # The run redoes steps 5-8 and ends where the undamaged run ended.
  again = loop.train_and_evaluate(runs.tiny_config(), workdir)
  assert again["exact"] == first["exact"]


@pytest.mark.slow
def test_evaluate_cli_reproduces_the_final_evaluation(digits_run):
  out = runs.cli("ra_jax.evaluate", "--workdir", digits_run, devices=8)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"checkpoint step {runs.SHARED_STEPS}" in out.stdout
  trained_results = json.load(open(os.path.join(digits_run, "results.json")))
  evaluated = json.load(open(os.path.join(
      digits_run, "evaluation", f"step_{runs.SHARED_STEPS}.json")))
  assert evaluated["exact"] == trained_results["exact"]
  assert "two-stage, 2 label list(s)" in out.stdout


def test_evaluating_a_directory_without_a_run_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="holds no run"):
    evaluate_workdir(str(tmp_path / "nothing"))


@pytest.mark.slow
def test_two_processes_follow_one_process(shared_digits_run, tmp_path):
  """launch/local.sh: two processes of one device each, coordinated by
  jax.distributed, take the steps the shared run took in this process on 8
  devices (the same global batches; sums in another order)."""
  args = runs.tiny_flags()
  double = subprocess.run(
      ["bash", "launch/local.sh", "--num_processes", "2",
       "--devices_per_process", "1", "--port", str(runs.free_port()),
       "--python", sys.executable, "--", *args, "--workdir",
       str(tmp_path / "two")], cwd=ROOT, env=_env(1), capture_output=True,
      text=True, timeout=300)
  assert double.returncode == 0, double.stderr[-3000:]
  assert "process 0 of 2: 1 local / 2 global" in double.stderr
  assert double.stdout.count("results written to") == 1  # process 0 only

  def losses(workdir):
    return [json.loads(l)["train/loss"]
            for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert len(losses(tmp_path / "two")) == runs.SHARED_STEPS
  np.testing.assert_allclose(losses(tmp_path / "two"),
                             losses(shared_digits_run), rtol=1e-4)
  one = json.load(open(os.path.join(shared_digits_run, "results.json")))
  two = json.load(open(tmp_path / "two" / "results.json"))
  assert two["exact"]["map"] == pytest.approx(one["exact"]["map"], abs=1e-3)
  assert (tmp_path / "two" / "logs" / "process_1.log").exists()
