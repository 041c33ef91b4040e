"""The full ranking a two-stage search implies, against a ranking built by
hand: kept lists' items by distance, then the rest by distance."""

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from ra_jax import retrieval


def _by_hand(query, db, db_lists, anchors, num_lists):
  """(Q, N) complete rankings and the distance count, item by item."""
  rankings, costs = [], []
  for q in query:
    to_anchors = ((anchors - q) ** 2).sum(1)
    kept = np.argsort(to_anchors, kind="stable")[:num_lists]
    d = ((db - q) ** 2).sum(1)
    inside = np.isin(db_lists, kept)
    first = np.flatnonzero(inside)[np.argsort(d[inside], kind="stable")]
    rest = np.flatnonzero(~inside)[np.argsort(d[~inside], kind="stable")]
    rankings.append(np.concatenate([first, rest]))
    costs.append(len(anchors) + inside.sum())
  return np.stack(rankings), float(np.mean(costs))


@hypothesis.given(st.integers(0, 10_000), st.integers(2, 5), st.integers(1, 5),
                  st.sampled_from(["labels", "anchors"]))
@hypothesis.settings(deadline=None, max_examples=25)
def test_matches_the_ranking_built_by_hand(seed, classes, num_lists, source):
  hypothesis.assume(num_lists <= classes)
  rng = np.random.default_rng(seed)
  anchors = rng.normal(size=(classes, 3)).astype(np.float32) * 2
  db_labels = rng.integers(0, classes, 40)
  db = (anchors[db_labels] + rng.normal(size=(40, 3))).astype(np.float32)
  query_labels = rng.integers(0, classes, 7)
  query = (anchors[query_labels] + rng.normal(size=(7, 3))).astype(
      np.float32)
  got = retrieval.two_stage_full_ranking(
      query, query_labels, db, db_labels, anchors, num_lists=num_lists,
      ks=(1, 5), list_source=source)
  db_lists = (db_labels if source == "labels" else
              ((db[:, None] - anchors[None]) ** 2).sum(-1).argmin(1))
  rankings, cost = _by_hand(query, db, db_lists, anchors, num_lists)
  want = retrieval.evaluate_ranking(rankings, query_labels, db_labels,
                                    ks=(1, 5))
  for key in ("map", "precision@1", "precision@5", "map@5", "recall@5"):
    assert got[key] == pytest.approx(want[key], abs=1e-9), key
  assert got["distance_computations"] == pytest.approx(cost)
  assert got["distance_fraction"] == pytest.approx(cost / 40)


def test_keeping_every_list_is_exact_search():
  rng = np.random.default_rng(0)
  anchors = rng.normal(size=(4, 5))
  db, db_labels = rng.normal(size=(60, 5)), rng.integers(0, 4, 60)
  query, query_labels = rng.normal(size=(9, 5)), rng.integers(0, 4, 9)
  every = retrieval.two_stage_full_ranking(query, query_labels, db, db_labels,
                                           anchors, num_lists=4)
  exact = retrieval.evaluate_retrieval(query, query_labels, db, db_labels)
  assert every["map"] == pytest.approx(exact["map"], abs=1e-12)
  assert every["distance_fraction"] == pytest.approx((60 + 4) / 60)


def test_bad_arguments_are_named():
  anchors = np.zeros((3, 2))
  db, labels = np.zeros((5, 2)), np.array([0, 1, 2, 3, 0])
  with pytest.raises(ValueError, match=r"num_lists 4: must be in \[1, 3\]"):
    retrieval.two_stage_full_ranking(db, labels, db, labels, anchors,
                                     num_lists=4)
  with pytest.raises(ValueError, match=r"label lists need database labels in"
                     r" \[0, 3\)"):
    retrieval.two_stage_full_ranking(db, labels, db, labels, anchors,
                                     num_lists=1)
  with pytest.raises(ValueError, match="list_source must be"):
    retrieval.two_stage_full_ranking(db, labels % 3, db, labels % 3, anchors,
                                     num_lists=1, list_source="kmeans")


def test_one_pass_ranks_every_search_as_its_own_pass_does():
  """`evaluate_searches` ranks all its searches from one pass over the
  queries: each row's metrics equal the search ranked alone."""
  rng = np.random.default_rng(3)
  anchors = 2 * rng.normal(size=(4, 3)).astype(np.float32)
  db_labels = rng.integers(0, 4, 300)
  db = np.round(anchors[db_labels] + rng.normal(size=(300, 3)), 1).astype(
      np.float32)
  query_labels = rng.integers(0, 4, 70)
  query = np.round(anchors[query_labels] + rng.normal(size=(70, 3)), 1
                   ).astype(np.float32)
  rows, per_query = retrieval.evaluate_searches(
      query, query_labels, db, db_labels, {"learned": anchors},
      num_lists=(1, 2), list_sources=("labels", "anchors"), ks=(1, 10))
  exact = retrieval.evaluate_retrieval(query, query_labels, db, db_labels,
                                       ks=(1, 10))
  assert rows[0]["metrics"] == exact
  assert float(np.nanmean(per_query["map"])) == pytest.approx(exact["map"])
  for row in rows[1:]:
    alone = retrieval.two_stage_full_ranking(
        query, query_labels, db, db_labels, anchors, num_lists=row["lists"],
        ks=(1, 10), list_source=row["list_source"])
    assert row["metrics"] == {k: v for k, v in alone.items() if k not in (
        "distance_computations", "distance_fraction", "stage_one_accuracy")}
    for key in ("distance_computations", "distance_fraction",
                "stage_one_accuracy"):
      assert row[key] == alone[key]
