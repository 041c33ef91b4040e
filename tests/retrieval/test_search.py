"""Exact and two-stage search against NumPy brute force."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from ra_jax import losses, retrieval
from ra_jax.retrieval import evaluate_retrieval, exact_search, two_stage_search


def _brute_force(q, db, k):
  d = ((q[:, None, :].astype(np.float64) - db[None].astype(np.float64))**2
       ).sum(-1)
  idx = np.argsort(d, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(d, idx, axis=1), idx


def _data(seed=0, n=500, q=37, dim=16):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(q, dim)).astype(np.float32),
          rng.normal(size=(n, dim)).astype(np.float32))


@pytest.mark.parametrize("db_chunk,query_chunk", [(1 << 16, 1024), (64, 10)])
def test_exact_search_equals_numpy_brute_force(db_chunk, query_chunk):
  q, db = _data()
  d, i = exact_search(q, db, 20, db_chunk=db_chunk, query_chunk=query_chunk)
  want_d, want_i = _brute_force(q, db, 20)
  np.testing.assert_array_equal(i, want_i)
  np.testing.assert_allclose(d, want_d, rtol=1e-5)


def test_sharded_search_on_8_devices_equals_unsharded():
  q, db = _data(1, n=803)  # not a multiple of 8: padded shards
  mesh = Mesh(np.array(jax.devices()), ("data",))
  sharded = exact_search(q, db, 15, mesh=mesh)
  single = exact_search(q, db, 15)
  np.testing.assert_array_equal(sharded[1], single[1])
  np.testing.assert_array_equal(sharded[0], single[0])


@pytest.mark.parametrize("method", ["grouped", "gathered"])
def test_two_stage_with_every_list_equals_exact_search(method):
  q, db = _data(2)
  rng = np.random.default_rng(2)
  anchors = rng.normal(size=(6, 16)).astype(np.float32)
  lists = rng.integers(0, 6, len(db))
  d, i = two_stage_search(q, anchors, db, lists, num_lists=6, k=25,
                          query_chunk=16, method=method)
  want_d, want_i = exact_search(q, db, 25)
  np.testing.assert_array_equal(i, want_i)
  # Same formula, other fusion per chunk shape: equal up to 1-2 ulp.
  np.testing.assert_allclose(d, want_d, rtol=1e-6)


@pytest.mark.parametrize("method", ["grouped", "gathered"])
def test_two_stage_ranks_only_the_chosen_lists(method):
  q, db = _data(3, n=300)
  rng = np.random.default_rng(3)
  anchors = rng.normal(size=(5, 16)).astype(np.float32) * 3
  lists = rng.integers(0, 5, len(db))
  d, i = two_stage_search(q, anchors, db, lists, num_lists=1, k=300,
                          method=method)
  nearest = np.asarray(losses.nearest_anchor(q, anchors))
  for row in range(len(q)):
    found = i[row][i[row] >= 0]
    expected = np.flatnonzero(lists == nearest[row])
    assert sorted(found.tolist()) == expected.tolist()  # exactly that list
    assert np.all(np.diff(d[row][: len(found)]) >= 0)
    assert np.all(np.isinf(d[row][len(found):]))
  # Stage 1 made beforehand (as the evaluation times it): the same search;
  # another choice of lists searches those lists instead.
  kept = np.asarray(retrieval.stage_one(q, anchors, 1))
  np.testing.assert_array_equal(kept[:, 0], nearest)
  _, i2 = two_stage_search(q, anchors, db, lists, num_lists=1, k=300,
                           method=method, kept=kept, query_chunk=7)
  np.testing.assert_array_equal(i2, i)
  other = (kept + 1) % 5
  _, i3 = two_stage_search(q, anchors, db, lists, num_lists=1, k=300,
                           method=method, kept=other)
  for row in range(len(q)):
    found = i3[row][i3[row] >= 0]
    assert sorted(found.tolist()) == np.flatnonzero(
        lists == other[row, 0]).tolist()
  index = retrieval.Index.build(db, lists, anchors=anchors)
  np.testing.assert_array_equal(index.stage_one(q, 1), kept)
  np.testing.assert_array_equal(
      index.search(q, 300, two_stage=True, kept=kept)[1], i)


def test_two_stage_reaches_exact_map_on_separable_clusters():
  rng = np.random.default_rng(4)
  centers = rng.normal(size=(8, 12)).astype(np.float32) * 10
  db_labels = rng.integers(0, 8, 800)
  q_labels = rng.integers(0, 8, 80)
  db = centers[db_labels] + rng.normal(size=(800, 12)).astype(np.float32)
  q = centers[q_labels] + rng.normal(size=(80, 12)).astype(np.float32)
  exact = evaluate_retrieval(q, q_labels, db, db_labels, ks=(10,))
  for lists in (db_labels, np.asarray(losses.nearest_anchor(db, centers))):
    _, idx = two_stage_search(q, centers, db, lists, num_lists=2, k=100)
    precision = np.mean(db_labels[idx[:, :10]] == q_labels[:, None])
    assert precision == pytest.approx(exact["precision@10"])
    assert precision == 1.0


def test_bad_arguments():
  q, db = _data()
  with pytest.raises(ValueError, match="num_lists"):
    two_stage_search(q, db[:3], db, np.zeros(len(db), int), num_lists=4, k=5)
  with pytest.raises(ValueError, match="db_lists"):
    two_stage_search(q, db[:3], db, np.full(len(db), 3), num_lists=1, k=5)
  with pytest.raises(ValueError, match="method"):
    two_stage_search(q, db[:3], db, np.zeros(len(db), int), num_lists=1, k=5,
                     method="fast")
  with pytest.raises(ValueError, match=r"kept must be \(\d+, 1\)"):
    two_stage_search(q, db[:3], db, np.zeros(len(db), int), num_lists=1, k=5,
                     kept=np.zeros((2, 1), int))
  with pytest.raises(ValueError, match="k must be"):
    exact_search(q, db, 0)
