"""Retrieval metrics on hand-made rankings, against scikit-learn and against a
naive per-query loop."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from ra_jax.retrieval import evaluate_retrieval


def _line(positions):
  return np.asarray(positions, np.float32)[:, None]


def test_hand_made_ranking():
  # The query sits at 0; database items at 1..5, so rank = position.
  # Labels by rank: relevant at ranks 1 and 3 of 5.
  result = evaluate_retrieval(_line([0]), [1], _line([1, 2, 3, 4, 5]),
                              [1, 0, 1, 0, 0], ks=(1, 2, 4))
  assert result["map"] == pytest.approx((1 / 1 + 2 / 3) / 2)
  assert result["precision@1"] == 1.0 and result["precision@2"] == 0.5
  assert result["recall@2"] == 0.5 and result["recall@4"] == 1.0
  assert result["map@2"] == pytest.approx(1 / 2)  # divisor min(R, k) = 2
  assert result["map@2_hits"] == pytest.approx(1.0)  # divisor hits@2 = 1
  assert result["map@4"] == pytest.approx((1 + 2 / 3) / 2)
  assert result["r_precision"] == 0.5
  assert result["map@r"] == pytest.approx(0.5)
  assert result["mrr"] == 1.0
  late = evaluate_retrieval(_line([0]), [1], _line([1, 2, 3]), [0, 0, 1])
  assert late["mrr"] == pytest.approx(1 / 3)
  assert late["map"] == pytest.approx(1 / 3)


def _naive(q, ql, db, dl, ks, exclude_self):
  """Straight from the definitions, one query at a time."""
  out = {}
  for i in range(len(q)):
    d = ((db - q[i])**2).sum(1)
    order = [j for j in np.argsort(d, kind="stable")
             if not (exclude_self and j == i)]
    rel = [dl[j] == ql[i] for j in order]
    r = sum(rel)
    if r == 0:
      continue
    prec = [sum(rel[:j + 1]) / (j + 1) for j in range(len(rel))]
    vals = {"map": sum(p for p, x in zip(prec, rel) if x) / r,
            "r_precision": sum(rel[:r]) / r,
            "map@r": sum(p for p, x in zip(prec[:r], rel[:r]) if x) / r,
            "mrr": 1 / (rel.index(True) + 1)}
    for k in ks:
      hits = sum(rel[:k])
      top = sum(p for p, x in zip(prec[:k], rel[:k]) if x)
      vals[f"precision@{k}"] = hits / k
      vals[f"recall@{k}"] = hits / r
      vals[f"map@{k}"] = top / min(r, k)
      vals[f"map@{k}_hits"] = top / hits if hits else 0.0
    for name, v in vals.items():
      out.setdefault(name, []).append(v)
  return {name: np.mean(v) for name, v in out.items()}


@pytest.mark.parametrize("exclude_self", [False, True])
def test_against_a_naive_loop(exclude_self):
  rng = np.random.default_rng(0)
  db = rng.normal(size=(60, 4))
  dl = rng.integers(0, 4, 60)
  q, ql = (db, dl) if exclude_self else (rng.normal(size=(17, 4)),
                                         rng.integers(0, 4, 17))
  ks = (1, 5, 10)
  got = evaluate_retrieval(q, ql, db, dl, ks=ks, exclude_self=exclude_self,
                           chunk_size=7)
  want = _naive(q, ql, db, dl, ks, exclude_self)
  for name, value in want.items():
    assert got[name] == pytest.approx(value, abs=1e-6), name


def test_map_agrees_with_scikit_learn():
  rng = np.random.default_rng(1)
  q, db = rng.normal(size=(25, 8)), rng.normal(size=(200, 8))
  ql, dl = rng.integers(0, 5, 25), rng.integers(0, 5, 200)
  expected = np.mean([
      average_precision_score(dl == ql[i], -((db - q[i])**2).sum(1))
      for i in range(25)])
  assert evaluate_retrieval(q, ql, db, dl)["map"] == pytest.approx(expected,
                                                                   abs=1e-6)


def test_queries_without_relevant_items_are_excluded_and_counted():
  result = evaluate_retrieval(_line([0, 0, 0]), [1, 7, 1], _line([1, 2]),
                              [1, 0])
  assert result["num_queries"] == 2
  assert result["queries_without_relevant"] == 1
  assert result["map"] == 1.0


def test_per_class_macro_average():
  # Class 0 has 3 perfect queries, class 1 one query with AP 0.5.
  q = _line([0, 0, 0, 10])
  db = _line([1, 11, 12])
  result = evaluate_retrieval(q, [0, 0, 0, 1], db, [0, 0, 1], ks=(1,))
  macro = evaluate_retrieval(q, [0, 0, 0, 1], db, [0, 0, 1], ks=(1,),
                             per_class=True)
  assert result["map"] == pytest.approx((3 * 1.0 + 0.5) / 4)
  assert macro["map"] == pytest.approx((1.0 + 0.5) / 2)


def test_exclude_self_needs_the_same_set():
  with pytest.raises(ValueError, match="exclude_self"):
    evaluate_retrieval(_line([0]), [0], _line([1, 2]), [0, 0],
                       exclude_self=True)


def test_ranking_metrics_agree_with_full_evaluation():
  from ra_jax.retrieval import evaluate_ranking, exact_search
  rng = np.random.default_rng(5)
  db, q = rng.normal(size=(300, 6)), rng.normal(size=(40, 6))
  dl, ql = rng.integers(0, 5, 300), rng.integers(0, 5, 40)
  _, idx = exact_search(q, db, 20)
  ranked = evaluate_ranking(idx, ql, dl, ks=(1, 10, 20))
  full = evaluate_retrieval(q, ql, db, dl, ks=(1, 10, 20))
  for name, value in ranked.items():
    assert value == pytest.approx(full[name], abs=1e-6), name
  missing = np.asarray(idx).copy()
  missing[:, 5:] = -1  # no results past rank 5: not relevant
  assert evaluate_ranking(missing, ql, dl, ks=(10,))["precision@10"] < (
      ranked["precision@10"])


def test_complete_rankings_give_every_metric_of_the_full_evaluation():
  from ra_jax.retrieval import evaluate_ranking, exact_search
  rng = np.random.default_rng(6)
  db, q = rng.normal(size=(50, 3)), rng.normal(size=(9, 3))
  dl, ql = rng.integers(0, 3, 50), rng.integers(0, 3, 9)
  _, idx = exact_search(q, db, 50)
  ranked = evaluate_ranking(idx, ql, dl, ks=(1, 5))
  full = evaluate_retrieval(q, ql, db, dl, ks=(1, 5))
  assert set(ranked) == set(full)
  for name, value in full.items():
    assert ranked[name] == pytest.approx(value, abs=1e-9), name
  truncated = evaluate_ranking(np.asarray(idx)[:, :10], ql, dl, ks=(1, 5))
  assert "map" not in truncated and "mrr" not in truncated
  with pytest.raises(ValueError, match="k=20 exceeds the rankings' length"):
    evaluate_ranking(np.asarray(idx)[:, :10], ql, dl, ks=(20,))


def test_precision_recall_curve_against_a_naive_argsort():
  from ra_jax.retrieval import RECALL_LEVELS, precision_recall
  rng = np.random.default_rng(7)
  db, q = rng.normal(size=(80, 2)), rng.normal(size=(12, 2))
  dl, ql = rng.integers(0, 4, 80), rng.integers(0, 4, 12)
  curves = []
  for i in range(len(q)):
    order = np.argsort(((db - q[i])**2).sum(1), kind="stable")
    rel = dl[order] == ql[i]
    hits = np.cumsum(rel)
    precision = hits / np.arange(1, len(db) + 1)
    recall = hits / rel.sum()
    curves.append([precision[recall >= t - 1e-12].max() for t in RECALL_LEVELS])
  np.testing.assert_allclose(precision_recall(q, ql, db, dl),
                             np.mean(curves, axis=0), atol=1e-12)


def test_nearest_anchor_accuracy_is_precision_at_1_against_the_anchors():
  from ra_jax.retrieval import nearest_anchor_accuracy
  rng = np.random.default_rng(8)
  anchors = rng.normal(size=(5, 4))
  q, ql = rng.normal(size=(40, 4)), rng.integers(0, 5, 40)
  nearest = np.argmin(((q[:, None] - anchors[None])**2).sum(-1), axis=1)
  assert nearest_anchor_accuracy(q, ql, anchors) == pytest.approx(
      np.mean(nearest == ql))


@pytest.mark.parametrize("args,message", [
    ((np.zeros((3, 2)), [0, 1], np.zeros((4, 2)), [0] * 4),
     r"query labels must have shape \(3,\)"),
    ((np.zeros((3, 2)), [0] * 3, np.zeros((4, 2)), [0] * 5),
     r"database labels must have shape \(4,\)"),
    ((np.zeros((3, 2)), [0] * 3, np.zeros((4, 3)), [0] * 4),
     "query embeddings have 2 dimensions, database embeddings 3"),
])
def test_mismatched_inputs_are_errors_not_truncations(args, message):
  with pytest.raises(ValueError, match=message):
    evaluate_retrieval(*args)
