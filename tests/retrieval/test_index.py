"""Index: build, add, search by id, save/load round trip and bad files."""

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
  _, expected = exact_search(q, index.embeddings, 5)
  np.testing.assert_array_equal(ids, 1000 + np.asarray(expected))
  d2, ids2 = index.search(q, 5, two_stage=True, num_lists=1)
  np.testing.assert_array_equal(ids2, ids)  # separable: same neighbours
  unlabelled = Index.build(index.embeddings, anchors=anchors,
                           list_source="anchors")
  _, ids3 = unlabelled.search(q, 5, two_stage=True)
  np.testing.assert_array_equal(ids3 + 1000, ids)


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
  for field in ("embeddings", "ids", "labels", "anchors"):
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
