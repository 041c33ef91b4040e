"""Stage 1 by any class vectors: a loss's own (by L2, cosine or logit) or
the database's class centroids, against NumPy written from the
definitions; and the search rows evaluated with them."""

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from ra_jax import retrieval


def _reference_top(queries, vectors, score, bias, k):
  q, v = np.asarray(queries, np.float64), np.asarray(vectors, np.float64)
  if score == "l2":
    cost = ((q[:, None] - v[None]) ** 2).sum(-1)
  elif score == "cosine":
    cost = -(q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
        v / np.linalg.norm(v, axis=1, keepdims=True)).T
  else:
    cost = -(q @ v.T + bias)
  return np.argsort(cost, axis=1, kind="stable")[:, :k]


@hypothesis.given(st.integers(0, 10_000), st.sampled_from(retrieval.SCORES),
                  st.integers(1, 4))
@hypothesis.settings(deadline=None, max_examples=30)
def test_top_classes_match_the_definitions(seed, score, k):
  rng = np.random.default_rng(seed)
  vectors = rng.normal(size=(6, 5)).astype(np.float32) * 3
  bias = rng.normal(size=6).astype(np.float32) if score == "logit" else None
  queries = rng.normal(size=(9, 5)).astype(np.float32) * 2
  got = retrieval.ClassVectors(vectors, score, bias).top(queries, k)
  np.testing.assert_array_equal(
      got, _reference_top(queries, vectors, score, bias, k))


def test_logit_is_not_nearest():
  """A classifier ranks by logit: a far row with a large bias wins."""
  vectors = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
  query = np.array([[1.0, 0.1]], np.float32)
  assert retrieval.ClassVectors(vectors).top(query, 1)[0, 0] == 0
  logit = retrieval.ClassVectors(vectors, "logit", np.array([0.0, 2.0]))
  assert logit.top(query, 1)[0, 0] == 1


def test_centroids_are_class_means_on_the_runs_sphere():
  db = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
  labels = np.array([0, 0, 1, 1])
  flat = retrieval.centroids(db, labels, 2)
  np.testing.assert_allclose(flat.vectors, [[2.0, 0.0], [0.0, 3.0]])
  assert flat.score == "l2"
  sphere = retrieval.centroids(db, labels, 2, sphere=True)
  np.testing.assert_allclose(sphere.vectors, [[1.0, 0.0], [0.0, 1.0]])
  with pytest.raises(ValueError, match=r"class\(es\) \[2\] have no"):
    retrieval.centroids(db, labels, 3)


def test_bad_class_vectors_are_named():
  with pytest.raises(ValueError, match="must be \\(C, D\\)"):
    retrieval.ClassVectors(np.zeros(3))
  with pytest.raises(ValueError, match="score must be one of"):
    retrieval.ClassVectors(np.zeros((2, 2)), "dot")
  with pytest.raises(ValueError, match="a bias is a logit's"):
    retrieval.ClassVectors(np.zeros((2, 2)), "l2", np.zeros(2))
  with pytest.raises(ValueError, match=r"bias must be \(2,\)"):
    retrieval.ClassVectors(np.zeros((2, 2)), "logit", np.zeros(3))


def test_search_rows_for_learned_vectors_and_centroids():
  rng = np.random.default_rng(0)
  means = rng.normal(size=(4, 6)).astype(np.float32) * 4
  db_labels = rng.integers(0, 4, 300)
  db = means[db_labels] + rng.normal(size=(300, 6)).astype(np.float32)
  q_labels = rng.integers(0, 4, 40)
  query = means[q_labels] + 2 * rng.normal(size=(40, 6)).astype(np.float32)
  bias = np.array([0.0, 0.0, 0.0, 500.0], np.float32)  # a poor classifier
  sets = {"learned": retrieval.ClassVectors(means, "logit", bias),
          "centroids": retrieval.centroids(db, db_labels, 4)}
  rows, per_query = retrieval.evaluate_searches(
      query, q_labels, db, db_labels, sets, ks=(10,), num_lists=(1, 4),
      list_sources=("labels", "anchors"))
  assert [(r["class_vectors"], r["list_source"], r["lists"])
          for r in rows] == [(None, None, None)] + [
              (name, source, n) for name in sets
              for source in ("labels", "anchors") for n in (1, 4)]
  exact = rows[0]["metrics"]
  assert exact["map"] == pytest.approx(np.nanmean(per_query["map"]))
  for row in rows[1:]:
    kept = sets[row["class_vectors"]].top(query, row["lists"])
    assert row["stage_one_accuracy"] == pytest.approx(
        np.mean(np.any(kept == q_labels[:, None], axis=1)))
    if row["lists"] == 4:  # every list kept: exact search, at C + N
      assert row["metrics"]["map"] == pytest.approx(exact["map"])
      assert row["distance_computations"] == 304
  learned = retrieval.find_row(rows, "two_stage", "labels", 1, "learned")
  centroid = retrieval.find_row(rows, "two_stage", "labels", 1, "centroids")
  # the biased classifier sends most queries to class 3; the centroids
  # do not, and their full ranking is the better one
  assert learned["stage_one_accuracy"] < 0.5 < centroid["stage_one_accuracy"]
  assert centroid["metrics"]["map"] > learned["metrics"]["map"]
