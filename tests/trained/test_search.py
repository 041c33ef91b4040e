"""python -m ra_jax.search on a trained digits work dir, end to end."""

import os
import pathlib
import re

import numpy as np
import pytest
from PIL import Image

from ra_jax.trained.search import Searcher
from tests import runs


def _cli(*args):
  return runs.cli("ra_jax.search", *args)


def _rows(stdout):
  """(id, label, distance) of each printed neighbour."""
  return [(int(m[1]), m[2], float(m[3])) for m in re.finditer(
      r"^\s+\d+\s+(\d+)\s+(\S+)\s+([\d.]+)$", stdout, re.M)]


@pytest.mark.slow
def test_query_image_two_stage_then_exact(digits_run, tmp_path):
  workdir = pathlib.Path(digits_run)
  from ra_jax import data
  test_split = data.get_source("digits").splits["test"]
  image = np.asarray(test_split[3]["image"])
  Image.fromarray(image[..., 0]).save(tmp_path / "digit.png")

  out = _cli("--workdir", str(workdir), "--query", str(tmp_path / "digit.png"),
             "--k", "5", "--num_lists", "2")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "indexing the database" in out.stderr  # first use builds the index
  assert os.path.exists(workdir / "index" / f"step_{runs.SHARED_STEPS}.npz")
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
  searcher = Searcher(str(workdir), progress=False)
  query = searcher.run.embed_image(image)
  distances = np.linalg.norm(searcher.index.vectors - query, axis=1)
  want = np.argsort(distances, kind="stable")[:5]  # rows in storage order
  rows = _rows(out.stdout)
  assert [i for i, _, _ in rows] == searcher.index.ids[want].tolist()
  np.testing.assert_allclose([d for _, _, d in rows], distances[want],
                             atol=2e-4)
  assert f"(label {test_split[3]['label']})" in out.stdout
  assert os.path.exists(tmp_path / "exact.png")

  # --index_storage disk: the same neighbours from a memory-mapped index.
  disk = _cli("--workdir", str(workdir), "--query_index", "3", "--k", "5",
              "--exact", "--index_storage", "disk", "--output",
              str(tmp_path / "disk.png"))
  assert disk.returncode == 0, disk.stderr[-3000:]
  assert (workdir / "index" / f"step_{runs.SHARED_STEPS}" /
          "header.json").exists()
  assert [i for i, _, _ in _rows(disk.stdout)] == [i for i, _, _ in rows]


def test_bad_queries_are_clear_errors(digits_run, tmp_path):
  searcher = Searcher(digits_run, progress=False)
  with pytest.raises(ValueError, match="no.png: not a readable image"):
    searcher.load_image(str(tmp_path / "no.png"))
  (tmp_path / "text.png").write_text("not an image")
  with pytest.raises(ValueError, match="text.png: not an image file PIL"):
    searcher.load_image(str(tmp_path / "text.png"))
  image = np.zeros((8, 8, 1), np.uint8)
  with pytest.raises(ValueError, match=r"num_lists 11: must be in \[1, 10\]"):
    searcher.search(image, k=5, num_lists=11, exact=False)
  found = searcher.search(image, k=5, num_lists=11, exact=True)
  assert len(found["ids"]) == 5  # exact search ignores the list count
  with pytest.raises(FileNotFoundError, match="holds no run"):
    Searcher(str(tmp_path / "empty"))


def test_an_on_disk_index_answers_as_the_in_memory_one(digits_run, tmp_path):
  """eval.index_storage="disk": the searcher's index is a DiskIndex
  directory built batch by batch, reused on the next start, and an export
  carries it; every search returns what the in-memory index returns."""
  import json
  from ra_jax import retrieval
  from ra_jax.trained import export
  from ra_jax.trained.search import ExportSearcher
  memory = Searcher(digits_run, progress=False)
  disk = Searcher(digits_run, progress=False, index_storage="disk")
  assert isinstance(disk.index, retrieval.DiskIndex)
  assert disk.index.directory == os.path.join(
      digits_run, "index", f"step_{runs.SHARED_STEPS}")
  out = tmp_path / "export"
  manifest = export.export_run(digits_run, str(out), platforms=("cpu",),
                               faiss=False, index_storage="disk")
  assert manifest["database"]["file"] == "database"
  exported = ExportSearcher(str(out))
  # The run's own setting chooses it too; the directory is reused.
  config_path = os.path.join(digits_run, "config.json")
  config = json.load(open(config_path))
  config["eval"]["index_storage"] = "disk"
  json.dump(config, open(config_path, "w"))
  again = Searcher(digits_run, progress=False)
  assert again.index.directory == disk.index.directory
  for searcher in (disk, exported):
    for i in range(3):
      image = disk.query_example(i)[0]
      for exact in (False, True):
        got = searcher.search(image, k=7, num_lists=2, exact=exact)
        want = memory.search(image, k=7, num_lists=2, exact=exact)
        np.testing.assert_array_equal(got["ids"], want["ids"])
        np.testing.assert_array_equal(got["labels"], want["labels"])
        np.testing.assert_allclose(got["distances"], want["distances"],
                                   rtol=1e-5, atol=1e-6)
  config["eval"]["index_storage"] = "ssd"
  json.dump(config, open(config_path, "w"))
  with pytest.raises(ValueError, match="eval.index_storage='ssd': one of"
                     " memory, disk, disk_float16"):
    Searcher(digits_run, progress=False)
