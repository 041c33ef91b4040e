"""python -m ra_jax.search on a trained digits work dir, end to end."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import digits
from ra_jax.training import searcher as search
from ra_jax.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.run([sys.executable, "-m", "ra_jax.search", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)


def _rows(stdout):
  """(id, label, distance) of each printed neighbour."""
  return [(int(m[1]), m[2], float(m[3])) for m in re.finditer(
      r"^\s+\d+\s+(\d+)\s+(\S+)\s+([\d.]+)$", stdout, re.M)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp("digits_run")
  config = digits.get_config("size=tiny")
  config.train.steps = 6
  loop.train_and_evaluate(config, str(path))
  return path


def test_query_image_two_stage_then_exact(workdir, tmp_path):
  from ra_jax import data
  test_split = data.get_source("digits").splits["test"]
  image = np.asarray(test_split[3]["image"])
  Image.fromarray(image[..., 0]).save(tmp_path / "digit.png")

  out = _cli("--workdir", str(workdir), "--query", str(tmp_path / "digit.png"),
             "--k", "5", "--num_lists", "2")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "indexing the database" in out.stderr  # first use builds the index
  assert os.path.exists(workdir / "index" / "step_6.npz")
  classes = re.search(r"stage 1 nearest classes, kept 2: (\S+) \(",
                      out.stdout)
  kept = set(re.findall(r"(\S+) \([\d.]+\)", out.stdout.split(
      "nearest classes, kept 2: ")[1].splitlines()[0]))
  assert classes and len(kept) == 2
  rows = _rows(out.stdout)
  assert len(rows) == 5 and {label for _, label, _ in rows} <= kept
  grid = Image.open(workdir / "search" / "digit.png")
  assert grid.size[0] == 6 * 96

  # --exact against a NumPy brute force over the cached index.
  out = _cli("--workdir", str(workdir), "--query_index", "3", "--k", "5",
             "--exact", "--output", str(tmp_path / "exact.png"))
  assert out.returncode == 0, out.stderr[-3000:]
  assert "indexing the database" not in out.stderr  # the cache is reused
  searcher = search.Searcher(str(workdir), progress=False)
  query = searcher.embed(image)
  distances = np.linalg.norm(searcher.index.embeddings - query, axis=1)
  want = np.argsort(distances, kind="stable")[:5]
  rows = _rows(out.stdout)
  assert [i for i, _, _ in rows] == want.tolist()
  np.testing.assert_allclose([d for _, _, d in rows], distances[want],
                             atol=2e-4)
  assert f"(label {test_split[3]['label']})" in out.stdout
  assert os.path.exists(tmp_path / "exact.png")


def test_bad_queries_are_clear_errors(workdir, tmp_path):
  out = _cli("--workdir", str(workdir), "--query", str(tmp_path / "no.png"))
  assert out.returncode != 0 and "no.png: not a readable image" in out.stderr
  (tmp_path / "text.png").write_text("not an image")
  out = _cli("--workdir", str(workdir), "--query", str(tmp_path / "text.png"))
  assert "text.png: not a readable image" in out.stderr
  out = _cli("--workdir", str(tmp_path / "empty"), "--query_index", "0")
  assert out.returncode != 0 and "holds no run" in out.stderr
  out = _cli("--workdir", str(workdir), "--query_index", "0",
             "--num_lists", "11")
  assert "--num_lists 11: must be in [1, 10]" in out.stderr
