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
