"""Index: build, add, search by id, save/load round trip and bad files."""

import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest

from ra_jax.retrieval import Index, exact_search


def _index(n=200, classes=4, seed=0):
  rng = np.random.default_rng(seed)
  anchors = 5 * rng.normal(size=(classes, 8)).astype(np.float32)
  labels = rng.integers(0, classes, n)
  embeddings = anchors[labels] + rng.normal(size=(n, 8)).astype(np.float32)
  return Index.build(embeddings, labels, anchors=anchors,
                     ids=1000 + np.arange(n)), anchors


def test_search_returns_ids_exact_and_two_stage():
  index, anchors = _index()
  q = anchors + 0.1
  d, ids = index.search(q, 5)
  _, expected = exact_search(q, index.vectors, 5)  # rows, storage order
  np.testing.assert_array_equal(ids, index.ids[np.asarray(expected)])
  d2, ids2 = index.search(q, 5, two_stage=True, num_lists=1)
  np.testing.assert_array_equal(ids2, ids)  # separable: same neighbours
  unlabelled = Index.build(index.vectors, anchors=anchors,
                           list_source="anchors")
  _, ids3 = unlabelled.search(q, 5, two_stage=True)
  np.testing.assert_array_equal(index.ids[ids3], ids)


def test_add_extends_the_index():
  index, anchors = _index(50)
  index.add(anchors, labels=np.arange(4))
  assert len(index) == 54
  _, ids = index.search(anchors, 1, two_stage=True)
  np.testing.assert_array_equal(ids[:, 0], 1050 + np.arange(4))
  with pytest.raises(ValueError, match="labels exactly"):
    index.add(anchors)


def test_save_load_round_trip(tmp_path):
  index, anchors = _index()
  path = str(tmp_path / "index.npz")
  index.save(path)
  loaded = Index.load(path)
  for field in ("vectors", "ids", "labels", "anchors"):
    np.testing.assert_array_equal(getattr(loaded, field),
                                  getattr(index, field))
  assert loaded.list_source == "labels"
  np.testing.assert_array_equal(loaded.search(anchors, 3)[1],
                                index.search(anchors, 3)[1])


def test_corrupted_or_mismatched_files_are_rejected(tmp_path):
  index, _ = _index()
  path = str(tmp_path / "index.npz")
  index.save(path)
  data = open(path, "rb").read()
  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match="truncated.npz: not a readable"):
    Index.load(str(truncated))
  # One flipped bit inside the embeddings: each array's CRC-32 catches it.
  edited = tmp_path / "edited.npz"
  flipped = bytearray(data)
  flipped[len(data) // 2] ^= 0x40
  edited.write_bytes(bytes(flipped))
  with pytest.raises(ValueError, match="edited.npz: not a readable.*CRC"):
    Index.load(str(edited))
  arrays = dict(np.load(path))
  bad = tmp_path / "bad_labels.npz"
  np.savez(bad, **{**arrays, "labels": arrays["labels"][:-1]})
  with pytest.raises(ValueError, match="bad_labels.npz: labels must have"):
    Index.load(str(bad))
  other = tmp_path / "other.npz"
  np.savez(other, **{**arrays, "format": np.array("something else")})
  with pytest.raises(ValueError, match="other.npz: format"):
    Index.load(str(other))
  old = tmp_path / "old.npz"
  np.savez(old, **{**arrays, "version": np.array(99)})
  with pytest.raises(ValueError, match="version 99"):
    Index.load(str(old))
  missing = tmp_path / "missing.npz"
  np.savez(missing, **{k: v for k, v in arrays.items() if k != "ids"})
  with pytest.raises(ValueError, match="missing field 'ids'"):
    Index.load(str(missing))


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
  index, _ = _index()
  path = str(tmp_path / "index.npz")
  index.save(path)
  before = open(path, "rb").read()

  def broken_savez(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(np, "savez", broken_savez)
  with pytest.raises(OSError, match="disk full"):
    index.save(path)
  assert open(path, "rb").read() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["index.npz"]


def test_invalid_indexes_name_the_field():
  with pytest.raises(ValueError, match="ids are not unique"):
    Index.build(np.zeros((2, 3)), ids=[1, 1])
  with pytest.raises(ValueError, match="anchors must be"):
    Index.build(np.zeros((2, 3)), anchors=np.zeros((2, 4)))
  with pytest.raises(ValueError, match="needs anchors"):
    Index.build(np.zeros((2, 3)), list_source="anchors")
  with pytest.raises(ValueError, match="id 4 is repeated"):
    Index.build(np.zeros((3, 3)), ids=[4, 2, 4])
  with pytest.raises(ValueError, match="embeddings hold NaN or inf in 2"):
    Index.build(np.array([[0.0, np.inf], [1.0, 2.0], [np.nan, 0.0]]))
  with pytest.raises(ValueError, match="queries hold NaN or inf"):
    Index.build(np.zeros((3, 2))).search(np.array([[np.nan, 0.0]]), 1)


def _reference(queries, embeddings, ids, lists, anchors, k, num_lists):
  """NumPy in float64: exact (num_lists None) or two-stage search, ids by
  distance (ties: lower id first), -1 past the kept lists' items."""
  d = ((queries[:, None].astype(np.float64) - embeddings[None]) ** 2).sum(-1)
  if num_lists is not None:
    to_anchor = ((queries[:, None].astype(np.float64) - anchors[None]) ** 2
                 ).sum(-1)
    kept = np.argsort(to_anchor, axis=1, kind="stable")[:, :num_lists]
    d = np.where(np.isin(lists[None], kept) if len(queries) == 1 else
                 (lists[None, :] == kept[:, :, None]).any(1), d, np.inf)
  found = []
  for row in d:
    order = np.lexsort((ids, row))[:k]
    found.append(np.where(np.isfinite(row[order]), ids[order], -1))
  return np.array(found)


@hypothesis.settings(max_examples=10, deadline=None, derandomize=True)
@hypothesis.given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    dim=st.integers(1, 5), num_lists=st.integers(1, 6),
    k=st.integers(1, 50), from_anchors=st.booleans(),
    seed=st.integers(0, 2**16))
def test_index_search_equals_numpy_on_any_list_sizes(
    sizes, dim, num_lists, k, from_anchors, seed):
  """Lists of any size, empty ones included (the static slices round up,
  the last list's slice is moved back from the end), exact and two-stage
  search against brute force; ids given in a shuffled order."""
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
  hypothesis.assume(len(labels) >= 1)
  n = len(labels)
  k = min(k, n)
  num_lists = min(num_lists, len(sizes))
  anchors = 3 * rng.normal(size=(len(sizes), dim)).astype(np.float32)
  embeddings = rng.normal(size=(n, dim)).astype(np.float32)
  ids = rng.permutation(10 * n)[:n]
  queries = rng.normal(size=(3, dim)).astype(np.float32)
  source = "anchors" if from_anchors else "labels"
  index = Index.build(embeddings, None if from_anchors else labels,
                      anchors=anchors, ids=ids, list_source=source)
  lists = (np.argmin(((embeddings[:, None] - anchors[None]) ** 2).sum(-1), 1)
           if from_anchors else labels)
  np.testing.assert_array_equal(index.search(queries, k)[1], _reference(
      queries, embeddings, ids, lists, anchors, k, None))
  np.testing.assert_array_equal(
      index.search(queries, k, two_stage=True, num_lists=num_lists)[1],
      _reference(queries, embeddings, ids, lists, anchors, k, num_lists))
  # Storage order: rows sorted by list, each row's id and list with it.
  np.testing.assert_array_equal(index.db_lists(), np.sort(lists))
  np.testing.assert_array_equal(
      index.vectors, embeddings[np.argsort(ids)][np.searchsorted(
          np.sort(ids), index.ids)])


def test_the_index_holds_one_copy_and_not_the_callers():
  """On CPU the device array is the index's only copy of the rows
  (`embeddings` is a view of it), and the caller's array is not it: writing
  to the caller's array afterwards changes nothing."""
  index, anchors = _index()
  if jax.default_backend() == "cpu":
    assert (index.vectors.ctypes.data ==
            index._lists.vectors.unsafe_buffer_pointer())
  assert not index.vectors.flags.writeable
  rng = np.random.default_rng(0)
  mine = rng.normal(size=(50, 8)).astype(np.float32)
  own = Index.build(mine, rng.integers(0, 4, 50), anchors=anchors)
  before = own.search(anchors, 5, two_stage=True)
  mine[:] = 0.0
  for got, want in zip(own.search(anchors, 5, two_stage=True), before):
    np.testing.assert_array_equal(got, want)


def test_labels_of_looks_ids_up():
  index, _ = _index()
  ids = np.array([[1007, -1], [1199, 1000]])
  want = [[index.labels[index.ids == 1007][0], -1],
          [index.labels[index.ids == 1199][0],
           index.labels[index.ids == 1000][0]]]
  np.testing.assert_array_equal(index.labels_of(ids), want)
  with pytest.raises(ValueError, match="id 5 is not in the index"):
    index.labels_of([5])


def test_a_version_1_file_in_any_order_loads_sorted(tmp_path):
  """Files written before the list-major layout (version 1: rows as given,
  no offsets) load, sorted, and search as the index they came from."""
  rng = np.random.default_rng(4)
  anchors = 4 * rng.normal(size=(3, 8)).astype(np.float32)
  labels = rng.integers(0, 3, 60)
  embeddings = anchors[labels] + rng.normal(size=(60, 8)).astype(np.float32)
  path = tmp_path / "v1.npz"
  np.savez(path, format=np.array("ra_jax.Index"), version=np.array(1),
           embeddings=embeddings, ids=np.arange(60), labels=labels,
           anchors=anchors, list_source=np.array("labels"))
  loaded = Index.load(str(path))
  fresh = Index.build(embeddings, labels, anchors=anchors)
  for two_stage in (False, True):
    np.testing.assert_array_equal(
        loaded.search(anchors, 7, two_stage=two_stage)[1],
        fresh.search(anchors, 7, two_stage=two_stage)[1])
  np.testing.assert_array_equal(loaded.offsets, fresh.offsets)


def test_edited_offsets_or_labels_out_of_list_order_are_refused(tmp_path):
  index, _ = _index()
  path = str(tmp_path / "index.npz")
  index.save(path)
  arrays = dict(np.load(path))
  offsets = arrays["offsets"].copy()
  offsets[2] += 1  # one row moved to the next list
  bad = tmp_path / "bad_offsets.npz"
  np.savez(bad, **{**arrays, "offsets": offsets})
  with pytest.raises(ValueError, match="bad_offsets.npz: labels are not in"
                     " list order"):
    Index.load(str(bad))
  short = tmp_path / "short_offsets.npz"
  np.savez(short, **{**arrays, "offsets": arrays["offsets"][:-1]})
  with pytest.raises(ValueError, match="short_offsets.npz: offsets must"):
    Index.load(str(short))
  nan = tmp_path / "nan.npz"
  embeddings = arrays["embeddings"].copy()
  embeddings[3, 1] = np.nan
  np.savez(nan, **{**arrays, "embeddings": embeddings})
  with pytest.raises(ValueError, match="nan.npz: embeddings hold NaN or inf"
                     " in 1 row"):
    Index.load(str(nan))


def test_long_lists_scored_in_chunks_equal_brute_force():
  """Lists long enough to be scored in chunks (`score_chunk`), one of them
  ending at the database's end: two-stage search equals brute force."""
  from ra_jax.retrieval import two_stage
  rng = np.random.default_rng(5)
  labels = np.repeat([0, 1, 2], [9000, 300, 11000])
  assert two_stage.score_chunk(two_stage.slice_length(11000, 20300)) == 1024
  anchors = np.array([[0.0, 0.0], [9.0, 0.0], [0.0, 9.0]], np.float32)
  embeddings = anchors[labels] + rng.normal(size=(len(labels), 2)).astype(
      np.float32)
  ids = rng.permutation(len(labels))
  index = Index.build(embeddings, labels, anchors=anchors, ids=ids)
  queries = anchors + 0.5
  for lists in (1, 2):
    np.testing.assert_array_equal(
        index.search(queries, 40, two_stage=True, num_lists=lists)[1],
        _reference(queries, embeddings, ids, labels, anchors, 40, lists))
