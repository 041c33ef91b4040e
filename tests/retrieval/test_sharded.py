"""Search sharded over devices and processes equals one process's search
over the whole index."""

import subprocess
import sys

import numpy as np
import pytest

from ra_jax.retrieval import DiskIndexWriter, Index
from ra_jax.retrieval.sharded import ShardedIndex, shard_rows
from tests import runs
from tests.retrieval import sharded_job


def _disk(path):
  embeddings, labels, anchors, ids, _ = sharded_job.data()
  with DiskIndexWriter(str(path), embeddings.shape[1],
                       anchors=anchors) as writer:
    writer.add(embeddings, labels, ids)
  return str(path)


def _one_process(disk):
  """What each index's own search returns, in this process."""
  return sharded_job.search_all(lambda index: index, disk)


def test_shard_rows_cuts_at_list_boundaries_near_even_shares():
  offsets = np.array([0, 10, 11, 40, 40, 100])
  np.testing.assert_array_equal(shard_rows(offsets, 4, True),
                                [0, 11, 40, 100, 100])
  np.testing.assert_array_equal(shard_rows(offsets, 4, False),
                                [0, 25, 50, 75, 100])
  np.testing.assert_array_equal(shard_rows(np.array([0, 3]), 4, True),
                                [0, 0, 0, 3, 3])


def test_sharded_over_this_processs_devices_equals_one_index(tmp_path):
  import jax
  embeddings, labels, anchors, ids, queries = sharded_job.data()
  # Two lists over three devices: one shard is empty. (Every device
  # compiles its own kernels: the two-process test covers more lists.)
  index = Index.build(embeddings, labels % 2, anchors=anchors[:2], ids=ids)
  sharded = ShardedIndex(index, jax.devices()[:3])
  assert np.diff(sharded.bounds).min() == 0
  for kwargs in ({}, {"two_stage": True, "num_lists": 1}):
    for got, want in zip(sharded.search(queries, 10, **kwargs),
                         index.search(queries, 10, **kwargs)):
      np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match=r"k must be in \[1, 3000\]"):
    sharded.search(queries, 3001)
  with pytest.raises(ValueError, match="needs anchors"):
    ShardedIndex(Index.build(embeddings), jax.devices()[:1]).search(
        queries, 3, two_stage=True)


@pytest.mark.slow
def test_two_processes_of_two_devices_return_what_one_process_returns(
    tmp_path):
  disk = _disk(tmp_path / "disk")
  out = tmp_path / "found.npz"
  launch = ["bash", "launch/local.sh", "--num_processes", "2",
            "--devices_per_process", "2", "--port", str(runs.free_port()),
            "--python", sys.executable, "--module",
            "tests.retrieval.sharded_job", "--log_dir", str(tmp_path / "logs"),
            "--", "--out", str(out), "--disk", disk]
  done = subprocess.run(launch, cwd=runs.ROOT, env=runs.cli_env(1),
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  found = np.load(out)
  assert (int(found["processes"]), int(found["devices"])) == (2, 4)
  want = _one_process(disk)
  assert set(want) == set(found.files) - {"processes", "devices"}
  for key, value in want.items():
    if key.endswith("/i") or key.startswith("memory/"):
      np.testing.assert_array_equal(found[key], value, err_msg=key)
    else:  # the disk index scores its lists in other shapes: last-bit
      np.testing.assert_allclose(found[key], value, rtol=1e-6, err_msg=key)
