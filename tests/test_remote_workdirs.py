"""Work dirs on gs://, without a network: epath's own test hook
(etils.epath.testing.mock_epath) serves gs:// paths from a local directory.

Everything ra_jax writes or reads in a work dir goes through `ra_jax.files`
(etils.epath), so it reaches the fake bucket; code that used `os` or `open`
on a gs:// path would instead create a local `gs:` directory, which every
test here checks for. Orbax's checkpoints go to gs:// through tensorstore,
which this hook cannot serve: a whole training run is tested with local
paths, which take the same ra_jax.files code path.
"""

import os
import pathlib

import numpy as np
import pytest
from etils import epath
from etils.epath import testing as epath_testing

from ra_jax import data, files, retrieval
from ra_jax.training import workdir as workdir_lib
from ra_jax.training import writers
from tests import runs


class _Mapped:
  """gs://... paths mapped under a local `root`, and epath mock wrappers
  that call the real function on the local path."""

  def __init__(self, root: pathlib.Path):
    self.root = root

  def local(self, path):
    path = os.fspath(path)
    return (str(self.root / path[len("gs://"):]) if path.startswith("gs://")
            else path)

  def remote(self, path):
    path, prefix = os.fspath(path), str(self.root) + os.sep
    return "gs://" + path[len(prefix):] if path.startswith(prefix) else path

  def one(self, fn, path, *args, **kwargs):
    return fn(self.local(path), *args, **kwargs)

  def two(self, fn, path, target, *args, **kwargs):
    return fn(self.local(path), self.local(target), *args, **kwargs)

  def walk(self, fn, top, **kwargs):
    for directory, subdirs, names in fn(self.local(top), **kwargs):
      yield self.remote(directory), subdirs, names


@pytest.fixture
def bucket(tmp_path, monkeypatch) -> pathlib.Path:
  """gs://... lives under the returned directory while the test runs."""
  root = tmp_path / "gcs"
  root.mkdir()
  monkeypatch.chdir(tmp_path)
  gcs = _Mapped(root)
  one = gcs.one

  def glob(fn, pattern):
    return [gcs.remote(p) for p in fn(gcs.local(pattern))]

  with epath_testing.mock_epath(
      open=one, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one,
      remove=one, rmtree=one, stat=one, rename=gcs.two, replace=gcs.two,
      copy=gcs.two, walk=gcs.walk, glob=glob):
    yield root
  assert not list(tmp_path.glob("gs:*")), "a gs:// path was used as local"


def test_files_reach_the_bucket_and_writes_stay_atomic(bucket):
  files.write_json("gs://b/run/results.json", {"map": 0.5})
  assert files.read_json("gs://b/run/results.json") == {"map": 0.5}
  assert (bucket / "b" / "run" / "results.json").exists()
  with pytest.raises(RuntimeError, match="upload failed"):
    with files.atomic_write("gs://b/run/results.json") as f:
      f.write('{"map": 0.')
      raise RuntimeError("upload failed")
  assert files.read_json("gs://b/run/results.json") == {"map": 0.5}
  for i in range(3):
    files.append_line("gs://b/run/log.jsonl", str(i))
  assert files.read_text("gs://b/run/log.jsonl") == "0\n1\n2\n"
  assert files.listdir("gs://b/run") == ["log.jsonl", "results.json"]
  files.move("gs://b/run/log.jsonl", "gs://b/old/log.jsonl")
  assert not files.exists("gs://b/run/log.jsonl")
  assert sorted(d for d, _, _ in files.walk("gs://b")) == [
      "gs://b", "gs://b/old", "gs://b/run"]
  assert files.absolute("gs://b/run") == "gs://b/run"
  assert isinstance(files.path("gs://b/run"), epath.Path)


def test_metrics_config_and_few_shot_selection_on_gs(bucket):
  workdir = "gs://b/runs/digits"
  writer = writers.MetricWriter(workdir, enabled=True, tensorboard=False)
  writer.write_scalars(1, {"train/loss": 2.0})
  writer.write_scalars(2, {"train/loss": 1.5})
  writer.write_scalars(2, {"eval/map@100": 0.25})  # merged by step
  writer.close()  # on a bucket the lines after the first wait for it
  assert writers.read_metrics(workdir) == [
      {"step": 1, "train/loss": 2.0},
      {"step": 2, "train/loss": 1.5, "eval/map@100": 0.25}]

  config = runs.tiny_config()
  workdir_lib.claim(workdir, config)
  assert workdir_lib.load_config_json(workdir)["loss"]["name"] == "cam"
  other = runs.tiny_config("ce")
  with pytest.raises(ValueError, match="holds a run with another loss"):
    workdir_lib.check(workdir, other)

  path = f"{workdir}/few_shot_indices.json"
  data.save_few_shot_indices(path, np.array([3, 1]), {"shot": 1, "seed": 0})
  with pytest.raises(ValueError, match="holds another few-shot selection"):
    data.save_few_shot_indices(path, np.array([2]), {"shot": 1, "seed": 0})
  assert files.read_json(path)["indices"] == [3, 1]


def test_an_index_saves_and_loads_on_gs(bucket):
  rng = np.random.default_rng(0)
  index = retrieval.Index.build(rng.normal(size=(20, 4)).astype(np.float32),
                                np.arange(20) % 3,
                                anchors=rng.normal(size=(3, 4)))
  index.save("gs://b/run/index/step_8.npz")
  loaded = retrieval.Index.load("gs://b/run/index/step_8.npz")
  np.testing.assert_array_equal(loaded.vectors, index.vectors)
  np.testing.assert_array_equal(loaded.labels, index.labels)
  with pytest.raises(ValueError, match="gs://b/run/index/none.npz: not a"
                     " readable ra_jax index"):
    retrieval.Index.load("gs://b/run/index/none.npz")


def test_a_report_of_runs_in_a_bucket(bucket, shared_digits_run):
  """The shared run copied into the bucket: the report finds it by walking
  gs://, reads its files and writes the report and figures there."""
  runs.copy_run(shared_digits_run, str(bucket / "b" / "runs" / "cam"))
  from ra_jax.report import build
  build.write_report("gs://b/runs", "gs://b/RESULTS.md", analyze=False)
  report = files.read_text("gs://b/RESULTS.md")
  assert "| class anchor margin (margin=6.46, min_norm=2.2) | 1 |" in report
  assert "![training curves](RESULTS_figures/training_curves.png)" in report
  assert (bucket / "b" / "RESULTS_figures" / "training_curves.png"
          ).stat().st_size > 0


@pytest.fixture
def flat_bucket(tmp_path, monkeypatch) -> pathlib.Path:
  """gs://... as a real bucket behaves: no directories. Creating one does
  nothing; writing or copying an object makes its "folders" appear; a
  rename needs its destination's prefix to exist already (epath's fsspec
  rename on a bucket), so renaming into a new prefix fails."""
  root = tmp_path / "flat"
  root.mkdir()
  monkeypatch.chdir(tmp_path)
  gcs = _Mapped(root)
  one, local = gcs.one, gcs.local

  def nothing(fn, path, *args, **kwargs):  # no directories to make
    del fn, path, args, kwargs

  def open_(fn, path, mode="r", *args, **kwargs):
    if any(c in mode for c in "wa"):  # an upload creates the object's prefix
      os.makedirs(os.path.dirname(local(path)), exist_ok=True)
    return fn(local(path), mode, *args, **kwargs)

  def copy(fn, path, target, *args, **kwargs):
    os.makedirs(os.path.dirname(local(target)), exist_ok=True)
    return fn(local(path), local(target), *args, **kwargs)

  with epath_testing.mock_epath(
      open=open_, exists=one, isdir=one, listdir=one, makedirs=nothing,
      mkdir=nothing, remove=one, rmtree=one, stat=one, rename=gcs.two,
      replace=gcs.two, copy=copy, walk=gcs.walk):
    yield root
  assert not list(tmp_path.glob("gs:*")), "a gs:// path was used as local"


def test_an_unreadable_checkpoint_moves_aside_on_a_flat_bucket(flat_bucket):
  """Moving a checkpoint aside (checkpoint._set_aside) copies each object
  and then deletes the source: a rename, which a flat bucket cannot do
  into a new prefix, is never needed."""
  for name in ("state/a", "state/d/b", "data/c"):
    files.write_text(f"gs://b/run/checkpoints/8/{name}", name)
  with pytest.raises(OSError):  # what a rename into a new prefix does
    epath.Path("gs://b/run/checkpoints/8").rename(
        "gs://b/run/checkpoints_unreadable/8")
  files.move("gs://b/run/checkpoints/8", "gs://b/run/checkpoints_unreadable/8")
  assert not files.exists("gs://b/run/checkpoints/8")
  for name in ("state/a", "state/d/b", "data/c"):
    assert files.read_text(
        f"gs://b/run/checkpoints_unreadable/8/{name}") == name
  files.write_text("gs://b/run/one.json", "{}")  # a single object too
  files.move("gs://b/run/one.json", "gs://b/elsewhere/one.json")
  assert files.read_text("gs://b/elsewhere/one.json") == "{}"
  assert not files.exists("gs://b/run/one.json")


def test_metrics_on_a_bucket_are_uploaded_now_and_then(bucket, monkeypatch):
  """Cloud Storage takes about one write a second per object: on gs://
  metrics.jsonl is appended at most every flush_seconds, at flush() (the
  loop flushes at checkpoints) and at close(); locally, at once."""
  uploads = []
  append = files.append_lines
  monkeypatch.setattr(files, "append_lines",
                      lambda path, lines: (uploads.append(len(lines)),
                                           append(path, lines)))
  writer = writers.MetricWriter("gs://b/run", enabled=True, tensorboard=False,
                                flush_seconds=3600)
  for step in range(1, 51):
    writer.write_scalars(step, {"train/loss": 1.0 / step})
  assert uploads == [1]  # the first line at once, then none for an hour
  writer.flush()
  assert uploads == [1, 49]
  writer.write_scalars(51, {"train/loss": 0.0})
  writer.close()
  assert uploads == [1, 49, 1]
  assert [r["step"] for r in writers.read_metrics("gs://b/run")] == list(
      range(1, 52))
  local = writers.MetricWriter(str(bucket / "local"), enabled=True,
                               tensorboard=False, flush_seconds=3600)
  local.write_scalars(1, {"train/loss": 1.0})
  assert uploads[-1] == 1 and len(uploads) == 4  # appended at once
  local.close()
