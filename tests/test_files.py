"""Atomic writes: a reader sees the old file or the whole new one."""

import json
import os

import pytest

from ra_jax import files


def test_a_complete_write_replaces_the_file(tmp_path):
  path = str(tmp_path / "sub" / "results.json")
  files.write_json(path, {"map": 0.5})
  files.write_json(path, {"map": 0.75})
  assert json.load(open(path)) == {"map": 0.75}
  assert os.listdir(tmp_path / "sub") == ["results.json"]  # no leftovers
  files.write_text(str(tmp_path / "a.md"), "# report\n")
  assert (tmp_path / "a.md").read_text() == "# report\n"


def test_a_failed_write_keeps_the_previous_file_and_leaves_nothing(tmp_path):
  path = str(tmp_path / "index.npz")
  with files.atomic_write(path, "wb") as f:
    f.write(b"old")
  with pytest.raises(RuntimeError, match="disk full"):
    with files.atomic_write(path, "wb") as f:
      f.write(b"half of the new")
      raise RuntimeError("disk full")
  assert open(path, "rb").read() == b"old"
  assert os.listdir(tmp_path) == ["index.npz"]
  with pytest.raises(TypeError):  # not JSON: fails before anything is written
    files.write_json(str(tmp_path / "x.json"), {"bad": object()})
  assert not (tmp_path / "x.json").exists()
  with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
    with files.atomic_write(path, "a"):
      pass
