"""The on-disk index: streamed build, memory-mapped search equal to the
in-memory Index and to brute force, float16 storage, and files that are
truncated, edited or in the way."""

import json
import os
from unittest import mock

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from ra_jax.retrieval import Index, on_disk
from ra_jax.retrieval.on_disk import DiskIndex, DiskIndexWriter
from tests.retrieval.test_index import _reference


def _data(n=3000, classes=12, dim=8, seed=0):
  rng = np.random.default_rng(seed)
  anchors = 4 * rng.normal(size=(classes, dim)).astype(np.float32)
  labels = rng.integers(0, classes, n)
  embeddings = anchors[labels] + rng.normal(size=(n, dim)).astype(np.float32)
  return embeddings, labels, anchors, rng.permutation(10 * n)[:n]


def _build(path, embeddings, labels, anchors, ids, chunk=700, **kwargs):
  with DiskIndexWriter(str(path), embeddings.shape[1], anchors=anchors,
                       **kwargs) as writer:
    for s in range(0, len(embeddings), chunk):
      writer.add(embeddings[s:s + chunk],
                 None if labels is None else labels[s:s + chunk],
                 ids[s:s + chunk])
  return writer.index


def _small_blocks():
  """Hash and search blocks of a few rows, so that small tests cross them."""
  return mock.patch.multiple(on_disk, HASH_BLOCK=4096,
                             _SEARCH_BLOCK_BYTES=64, _CHUNK_BYTES=2000)


@hypothesis.settings(max_examples=6, deadline=None, derandomize=True)
@hypothesis.given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    dim=st.integers(1, 5), num_lists=st.integers(1, 6),
    k=st.integers(1, 50), from_anchors=st.booleans(),
    chunk=st.integers(1, 60), seed=st.integers(0, 2**16))
def test_disk_search_equals_numpy_and_the_in_memory_index(
    tmp_path_factory, sizes, dim, num_lists, k, from_anchors, chunk, seed):
  """Any list sizes (empty ones too), chunks of any size, blocks smaller
  than a list: exact and two-stage search equal brute force and `Index`."""
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
  hypothesis.assume(len(labels) >= 1)
  n = len(labels)
  k, num_lists = min(k, n), min(num_lists, len(sizes))
  anchors = 3 * rng.normal(size=(len(sizes), dim)).astype(np.float32)
  embeddings = rng.normal(size=(n, dim)).astype(np.float32)
  ids = rng.permutation(10 * n)[:n]
  queries = rng.normal(size=(3, dim)).astype(np.float32)
  source = "anchors" if from_anchors else "labels"
  given = None if from_anchors else labels
  with _small_blocks():
    disk = _build(tmp_path_factory.mktemp("i") / "index", embeddings, given,
                  anchors, ids, chunk=chunk, list_source=source)
    memory = Index.build(embeddings, given, anchors=anchors, ids=ids,
                         list_source=source)
    lists = (np.argmin(((embeddings[:, None] - anchors[None]) ** 2).sum(-1),
                       1) if from_anchors else labels)
    for kwargs, lists_kept in (({}, None),
                               ({"two_stage": True, "num_lists": num_lists},
                                num_lists)):
      got = disk.search(queries, k, **kwargs)
      np.testing.assert_array_equal(got[1], _reference(
          queries, embeddings, ids, lists, anchors, k, lists_kept))
      want = memory.search(queries, k, **kwargs)
      np.testing.assert_array_equal(got[1], want[1])
      np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
  for field in ("ids", "labels", "offsets", "vectors"):
    want = getattr(memory, field)
    if want is None:
      assert getattr(disk, field) is None
    else:
      np.testing.assert_array_equal(getattr(disk, field), want)


def test_open_index_and_write_index_round_trip(tmp_path):
  embeddings, labels, anchors, ids = _data()
  memory = Index.build(embeddings, labels, anchors=anchors, ids=ids)
  memory.save(str(tmp_path / "index.npz"))
  disk = on_disk.write_index(memory, str(tmp_path / "disk"))
  assert isinstance(on_disk.open_index(str(tmp_path / "disk")), DiskIndex)
  assert isinstance(on_disk.open_index(str(tmp_path / "index.npz")), Index)
  queries = embeddings[:20] + 0.1
  reopened = DiskIndex(str(tmp_path / "disk"), verify=True)
  for index in (disk, reopened):
    np.testing.assert_array_equal(index.search(queries, 7)[1],
                                  memory.search(queries, 7)[1])
    np.testing.assert_array_equal(
        index.search(queries, 7, two_stage=True, num_lists=2)[1],
        memory.search(queries, 7, two_stage=True, num_lists=2)[1])
  np.testing.assert_array_equal(disk.labels_of(ids[:5]), labels[:5])
  assert repr(disk) == "DiskIndex(3000 x 8, 12 anchors, lists from labels)"


def test_two_stage_reads_only_the_kept_lists(tmp_path):
  embeddings, labels, anchors, ids = _data()
  disk = _build(tmp_path / "index", embeddings, labels, anchors, ids)
  read = []
  real = disk._rows
  disk._rows = lambda start, stop: read.append((start, stop)) or real(
      start, stop)
  queries = anchors[[3, 3, 7]] + 0.01
  disk.search(queries, 5, two_stage=True, num_lists=1)
  assert len(read) == 2  # lists 3 and 7, each once for all its queries
  for (start, stop), c in zip(read, (3, 7)):
    size = disk.offsets[c + 1] - disk.offsets[c]
    assert stop - start < 1.2 * size + 16  # the list, rounded up
    assert start <= disk.offsets[c] and disk.offsets[c + 1] <= stop


def test_float16_storage_is_exact_for_the_rounded_vectors(tmp_path):
  embeddings, labels, anchors, ids = _data(seed=1)
  disk = _build(tmp_path / "half", embeddings, labels, anchors, ids,
                dtype="float16")
  assert disk.dtype == np.float16
  assert os.path.getsize(tmp_path / "half" / "vectors.npy") < (
      embeddings.nbytes // 2 + 4096)
  rounded = embeddings.astype(np.float16).astype(np.float32)
  queries = embeddings[:30] + 0.2
  np.testing.assert_array_equal(disk.search(queries, 10)[1], _reference(
      queries, rounded, ids, labels, anchors, 10, None))
  np.testing.assert_array_equal(
      disk.search(queries, 10, two_stage=True, num_lists=2)[1],
      _reference(queries, rounded, ids, labels, anchors, 10, 2))
  with pytest.raises(ValueError, match="beyond float16's range"):
    with DiskIndexWriter(str(tmp_path / "big"), 8, dtype="float16") as w:
      w.add(np.full((2, 8), 1e6, np.float32))
  assert not os.path.exists(tmp_path / "big")


def test_bad_chunks_are_refused_and_the_rest_is_kept(tmp_path):
  embeddings, labels, anchors, ids = _data(n=100)
  writer = DiskIndexWriter(str(tmp_path / "index"), 8, anchors=anchors)
  writer.add(embeddings[:50], labels[:50], ids[:50])
  bad = embeddings[50:].copy()
  bad[3, 1] = np.nan
  with pytest.raises(ValueError, match="NaN or inf in 1 row.*row 3"):
    writer.add(bad, labels[50:], ids[50:])
  with pytest.raises(ValueError, match="labels with every chunk"):
    writer.add(embeddings[50:])
  with pytest.raises(ValueError, match=r"embeddings must be \(n, 8\)"):
    writer.add(embeddings[50:, :4], labels[50:])
  with pytest.raises(ValueError, match=r"labels go up to \d+ but there are 12"):
    writer.add(embeddings[50:], labels[50:] + 12)
  index = writer.finish()
  assert len(index) == 50
  np.testing.assert_array_equal(np.sort(index.ids), np.sort(ids[:50]))
  with pytest.raises(ValueError, match="finished or aborted"):
    writer.add(embeddings[:1], labels[:1])


def test_nothing_is_written_over_or_left_behind(tmp_path):
  embeddings, labels, anchors, ids = _data(n=100)
  target = tmp_path / "index"
  target.mkdir()
  (target / "mine.txt").write_text("keep")
  with pytest.raises(FileExistsError, match="index already exists"):
    DiskIndexWriter(str(target), 8)
  assert (target / "mine.txt").read_text() == "keep"
  # A build that fails at the end (a repeated id) leaves nothing.
  with pytest.raises(ValueError, match="id 5 is repeated"):
    with DiskIndexWriter(str(tmp_path / "new"), 8, anchors=anchors) as w:
      w.add(embeddings[:10], labels[:10], np.arange(10))
      w.add(embeddings[10:20], labels[10:20], np.arange(5, 15))
  assert sorted(os.listdir(tmp_path)) == ["index"]
  with pytest.raises(ValueError, match="no items were added"):
    DiskIndexWriter(str(tmp_path / "empty"), 8).finish()
  assert sorted(os.listdir(tmp_path)) == ["index"]
  with pytest.raises(ValueError, match="local file system"):
    DiskIndexWriter("gs://bucket/index", 8)


def _damaged(tmp_path, name, edit):
  embeddings, labels, anchors, ids = _data(n=2000)
  with _small_blocks():
    path = tmp_path / name
    _build(path, embeddings, labels, anchors, ids)
  edit(path)
  return str(path), embeddings[:4]


def _flip(path, filename, at):
  data = bytearray((path / filename).read_bytes())
  data[at] ^= 0x01
  (path / filename).write_bytes(bytes(data))


def test_truncated_or_edited_files_are_refused_by_name(tmp_path):
  path, _ = _damaged(tmp_path, "short", lambda p: os.truncate(
      p / "vectors.npy", os.path.getsize(p / "vectors.npy") - 8))
  with pytest.raises(ValueError, match=r"short/vectors.npy: \d+ bytes.*"
                     r"truncated"):
    DiskIndex(path)
  path, _ = _damaged(tmp_path, "ids", lambda p: _flip(p, "ids.npy", 300))
  with pytest.raises(ValueError, match="ids/ids.npy: bytes 0-4095 do not"
                     " match the SHA-256"):
    DiskIndex(path)
  path, _ = _damaged(tmp_path, "gone", lambda p: os.remove(p / "norms.npy"))
  with pytest.raises(ValueError, match="gone/norms.npy: missing"):
    DiskIndex(path)
  path, _ = _damaged(tmp_path, "header", lambda p: (p / "header.json")
                     .write_text("{not json"))
  with pytest.raises(ValueError, match="header/header.json: not a readable"):
    DiskIndex(path)
  # One flipped bit deep in the vectors: opening is cheap and succeeds;
  # the first search that reads that block refuses it, and so does verify.
  with _small_blocks():
    path, queries = _damaged(
        tmp_path, "vectors", lambda p: _flip(p, "vectors.npy", 40000))
    index = DiskIndex(path)
    with pytest.raises(ValueError, match="vectors/vectors.npy: bytes"
                       " 36864-40959 do not match the SHA-256"):
      index.search(queries, 5)
    with pytest.raises(ValueError, match="vectors.npy: bytes 36864"):
      DiskIndex(path, verify=True)


def test_two_stage_checks_exactly_the_blocks_it_reads(tmp_path):
  """A flipped byte at the start of list 5: two-stage search of list 0
  (other blocks) answers; of list 5 it refuses, though the byte is the
  first of its range."""
  embeddings, labels, anchors, ids = _data(n=2000)
  with _small_blocks():
    path = tmp_path / "index"
    index = _build(path, embeddings, labels, anchors, ids)
    start = index._data_start + int(index.offsets[5]) * 32
    assert start % 4096 and int(index.offsets[1]) * 32 < 4096 * 2
    _flip(path, "vectors.npy", start)
    index = DiskIndex(str(path))
    index.search(anchors[:1], 5, two_stage=True, num_lists=1)
    with pytest.raises(ValueError, match=f"bytes {start // 4096 * 4096}-"):
      index.search(anchors[5:6], 5, two_stage=True, num_lists=1)


def test_an_edited_header_is_refused(tmp_path):
  path, _ = _damaged(tmp_path, "index", lambda p: None)
  header = json.loads(open(os.path.join(path, "header.json")).read())
  for field, value, message in (("format", "other", "format 'other'"),
                                ("version", 9, "version 9"),
                                ("dtype", "int8", "dtype 'int8'"),
                                ("count", 1999, r"header says float32 "
                                 r"\(1999, 8\)")):
    edited = {**header, field: value}
    with open(os.path.join(path, "header.json"), "w") as f:
      json.dump(edited, f)
    with pytest.raises(ValueError, match=message):
      DiskIndex(path)
