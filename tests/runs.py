"""Tiny trained runs for the tests, built once per test session.

Training, even for a few steps, compiles the model, its optimizer and the
evaluation; doing it once and sharing the work dir keeps the suite fast.
The shared run uses the MLP backbone: what these tests check (checkpoints,
resumption, processes, evaluation, search, the report) does not depend on
the backbone, and the ResNet trains end to end in the README test. Tests
that write into a run (evaluate, search, report, damaged checkpoints) take a
private copy (the `digits_run` fixture in conftest.py).
"""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Iterator

from configs import digits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_STEPS = 8


# The shared run: configs/digits.py:size=tiny (TINY_CONFIG) with these
# fields: a width-32 MLP, 8 steps of 16 images at learning rate 0.01 (stable
# enough that runs on other device counts stay within float rounding),
# checkpoints at steps 4 and 8, subset evaluation at the same steps,
# two-stage search with 1 and 2 lists (the default). `tiny_config` and
# `tiny_flags` are this one description, in Python and on the command line.
TINY_CONFIG = "configs/digits.py:size=tiny"
TINY_FIELDS = {"model.name": "mlp", "model.width": 32,
               "train.steps": SHARED_STEPS, "train.checkpoint_every": 4,
               "eval.every": 4, "optim.learning_rate": 0.01}


def tiny_config(loss: str = "cam", **train):
  """The shared run's configuration (another loss and train.* fields on
  request)."""
  from configs import common
  config = digits.get_config(f"size=tiny,loss={loss}")
  common.set_fields(config, {**TINY_FIELDS, **{
      f"train.{key}": value for key, value in train.items()}})
  return config


def tiny_flags(loss: str = "cam") -> list[str]:
  """`--config` and overrides that give `ra_jax.train` the shared run's
  configuration."""
  return ["--config", f"{TINY_CONFIG},loss={loss}"] + [
      f"--config.{field}={value}" for field, value in TINY_FIELDS.items()]


def cli(module: str, *args: str, devices: int = 1, timeout: float = 300
        ) -> subprocess.CompletedProcess:
  """`python -m module args...` from the checkout, on `devices` fake CPU
  devices; its output captured as text."""
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                        env=cli_env(devices), capture_output=True, text=True,
                        timeout=timeout)


def copy_run(source: str, target: str) -> str:
  """A copy of a finished run's work dir that can be changed freely."""
  shutil.copytree(source, target)
  return target


def cli_env(devices: int = 1) -> dict:
  """The environment of a CLI subprocess: CPU, `devices` fake devices, this
  checkout importable, no multi-process variables."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
               "JAX_PROCESS_ID"):
    env.pop(name, None)
  return env


def free_port() -> int:
  """A TCP port on localhost that nothing listens on right now."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def serving(path: str, flag: str = "--workdir",
            timeout: float = 120) -> Iterator[str]:
  """`python -m ra_jax.serve --workdir path` (or `--export path`) on a
  free port, once its page answers; yields the page's URL (ending in "/"),
  stops the server afterwards."""
  port = free_port()
  process = subprocess.Popen(
      [sys.executable, "-m", "ra_jax.serve", flag, path, "--port",
       str(port)], cwd=ROOT, env=cli_env(1), stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  base = f"http://127.0.0.1:{port}/"
  try:
    deadline = time.time() + timeout
    while True:
      assert process.poll() is None, process.stderr.read()[-3000:]
      try:
        urllib.request.urlopen(base, timeout=5)
        break
      except (urllib.error.URLError, ConnectionError):
        assert time.time() < deadline, "the server did not come up"
        time.sleep(0.5)
    yield base
  finally:
    process.terminate()
    process.wait(timeout=30)
