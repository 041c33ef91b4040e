"""Test session set-up: 8 fake CPU devices, so sharding runs in-process.

XLA reads the flag once, when the backend starts, so it must be set before
anything imports jax.
"""

import os
import sys

# Machines of this kind set PYTHONDONTWRITEBYTECODE=1 and the test command
# installs with --no-compile, so every Python process the suite starts
# (each pytest-xdist worker, each command-line run) compiled every module
# it imported from source: 3.2 of the 5.0 s of `python -m ra_jax.search
# --help`. The tests write bytecode caches (git ignores __pycache__), so
# each module is compiled once per checkout; the subprocesses inherit it.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " +
                             _FLAG).strip()

# Initialising a ResNet compiles a threefry draw per parameter; XLA:CPU
# compiles the older, non-partitionable lowering about 3x faster (3.5 s
# against 11 s for the test ResNet-18). Parameters are replicated, so the
# lowering changes the random bits only; the subprocesses inherit it.
os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")

# Most tests compile more than they run: with XLA's optimisations off
# (jax_disable_most_optimizations) a clean-clone suite took 320 s instead of
# 384 s on 2 cores. Tests whose time is run time (the README's main command)
# turn them back on; the subprocesses inherit the setting.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

# Many tests compile the same tiny programs (the digits ResNet, its optimizer,
# the search and metric kernels). A compilation cache shared by the test
# session and the subprocesses it starts compiles each once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
      prefix="ra_jax_test_jit_cache_")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.1"

import pathlib  # noqa: E402

import pytest  # noqa: E402


def _whole_array_checkpoint_saves():
  """With 8 fake devices every replicated array is saved replica-parallel:
  orbax slices it 8 ways (136 slice compilations and ~3 s per save of the
  tiny test model). One replica writes each array instead, as on a single
  real device; the files are the same."""
  import jax
  import orbax.checkpoint as ocp
  current = ocp.type_handlers.get_type_handler(jax.Array)
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(
          use_replica_parallel=False,
          array_metadata_store=current._array_metadata_store),
      override=True)


_whole_array_checkpoint_saves()


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: end-to-end runs, subprocesses, and tests that"
      " compile a whole model or training step (over ~3.5 s on 2 cores);"
      " deselect with -m 'not slow' for a quick inner loop")


def pytest_collection_modifyitems(config, items):
  """Tests that use a session-built directory (a trained run, a built
  dataset) are slow. Under pytest-xdist a file lock lets the first worker
  that needs one build it and the others wait for it (`_build_once`).

  Slow tests run first (stable order otherwise): pytest-xdist hands out
  tests in this order, and a long test started last leaves the other
  workers idle at the end."""
  for item in items:
    if {"shared_digits_run", "fashion_mnist_dir"} & set(item.fixturenames):
      item.add_marker(pytest.mark.slow)
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _shared_dir(tmp_path_factory, name: str) -> pathlib.Path:
  """A directory every pytest-xdist worker of this session sees."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # the workers' common parent
  return base / name


def _build_once(path: pathlib.Path, marker: str, build) -> str:
  """Runs `build(path)` unless another worker did; a lock serialises it."""
  from filelock import FileLock
  with FileLock(str(path) + ".lock"):
    if not (path / marker).exists():
      build(str(path))
  return str(path)


@pytest.fixture(scope="session")
def shared_digits_run(tmp_path_factory) -> str:
  """One tiny finished digits run (class anchor margin loss; see
  tests/runs.py), trained once per session. Read it, never write to it."""
  from ra_jax.training import loop
  from tests import runs
  return _build_once(
      _shared_dir(tmp_path_factory, "shared_digits_cam"), "results.json",
      lambda path: loop.train_and_evaluate(runs.tiny_config(), path))


@pytest.fixture
def digits_run(shared_digits_run, tmp_path) -> str:
  """A private copy of the shared digits run, for tests that write."""
  from tests import runs
  return runs.copy_run(shared_digits_run, str(tmp_path / "digits_cam"))


@pytest.fixture(scope="session")
def fashion_mnist_dir(tmp_path_factory) -> str:
  """A TFDS data dir with Fashion-MNIST built from Debian's files, once per
  session; skips where the package is not installed (.ci/run installs it)."""
  from ra_jax.data.builders import fashion_mnist_idx
  if not os.path.isdir(fashion_mnist_idx.DEBIAN_DIR):
    pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get"
                " install dataset-fashion-mnist; .ci/run installs it)")
  from ra_jax import data

  def build(path):
    data.get_source("fashion_mnist", data_dir=path)
    pathlib.Path(path, "built").touch()
  return _build_once(_shared_dir(tmp_path_factory, "fashion_mnist_tfds"),
                     "built", build)
