"""The README's code is real: its API example runs and does what it says."""

import contextlib
import io
import pathlib
import re

import pytest

from tests import runs

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _block(marker: str, language: str) -> str:
  text = README.read_text()
  match = re.search(
      rf"<!-- {marker} -->\s*```{language}\n(.*?)```", text, re.DOTALL)
  assert match, f"README.md has no ```{language} block after <!-- {marker} -->"
  return match.group(1)


@pytest.mark.slow
def test_api_example_trains_a_separable_embedding():
  namespace = {}
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(_block("api-example", "python"), "README.md", "exec"),
         namespace)
  assert "nearest-anchor accuracy" in out.getvalue()
  assert float(namespace["accuracy"]) > 0.95
  assert float(namespace["loss"]) < 1.0


def test_setup_commands_are_single_lines_using_the_constraints():
  for marker in ("main-command", "test-command"):
    command = _block(marker, "sh").strip()
    assert "\n" not in command
    assert "-c constraints.txt" in command


@pytest.mark.slow
def test_models_example_builds_anchors():
  namespace = {}
  exec(compile(_block("models-example", "python"), "README.md", "exec"),
       namespace)
  assert namespace["anchors"].shape == (100, 128)


def test_data_example_gives_fashion_mnist_batches(fashion_mnist_dir,
                                                  monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", fashion_mnist_dir)
  namespace = {}
  exec(compile(_block("data-example", "python"), "README.md", "exec"),
       namespace)
  batch = next(iter(namespace["batches"]))
  assert batch["image"].shape == (128, 28, 28, 1)


def test_retrieval_example_finds_same_class_neighbours():
  namespace = {}
  with contextlib.redirect_stdout(io.StringIO()):
    exec(compile(_block("retrieval-example", "python"), "README.md", "exec"),
         namespace)
  ids, q_labels = namespace["ids"], namespace["q_labels"]
  assert (namespace["db_labels"][ids] == q_labels[:, None]).mean() > 0.99
  assert namespace["metrics"]["map"] > 0.9


@pytest.mark.slow
def test_main_command_trains_and_prints_results(tmp_path):
  """The README's main job (fewer epochs, another work dir) runs as shown."""
  import subprocess
  import sys
  command = _block("main-command", "sh").strip().split(" && ")[-1]
  program, *args = command.split()
  assert program.endswith("python") and args[:2] == ["-m", "ra_jax.train"]
  args = [a if not a.startswith("/tmp/") else str(tmp_path / "run")
          for a in args]
  result = subprocess.run(
      [sys.executable, *args, "--config.train.epochs=1"], capture_output=True,
      text=True, cwd=README.parent, timeout=600,
      env={**runs.cli_env(1), "JAX_DISABLE_MOST_OPTIMIZATIONS": "0"})
  assert result.returncode == 0, result.stderr[-2000:]
  assert "two-stage, 1 label list(s)" in result.stdout
  # the final evaluation shows its progress, as training does
  assert "embedding the database" in result.stderr
  assert "searches ranked (450 queries x 1347)" in result.stderr
  assert "nearest-anchor accuracy" in result.stdout
  assert (tmp_path / "run" / "results.json").exists()


def test_the_loss_table_states_each_losss_geometry():
  """The README's loss table says what the registry declares."""
  from ra_jax import losses
  rows = re.findall(r"^\| [^|]*\(`(\w+)`\) \|.*\| ([^|]+) \|$",
                    README.read_text(), re.M)
  assert {name for name, _ in rows} == set(losses.LOSSES)
  for name, geometry in rows:
    spec = losses.get_loss(name)
    assert geometry.split()[0].lower() == spec.geometry, name
    others = [g for g in spec.allowed_geometries if g != spec.geometry]
    assert ("on request" in geometry) == bool(others), name
