"""Bad input to retrieval: errors that name the argument or the file, and
metric invariants checked on random cases (hypothesis)."""

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest

from ra_jax import retrieval
from ra_jax.retrieval import Index

settings = hypothesis.settings(max_examples=40, deadline=None,
                               derandomize=True)


def _db(n=20, d=3, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, d)).astype(np.float32),
          rng.integers(0, 4, n))


def test_two_stage_search_refuses_lists_that_do_not_fit_the_database():
  db, labels = _db()
  anchors = np.eye(4, 3, dtype=np.float32)
  queries = db[:2]
  with pytest.raises(ValueError, match=r"db_lists must have shape \(20,\)"):
    retrieval.two_stage_search(queries, anchors, db, labels[:15],
                               num_lists=1, k=3)
  with pytest.raises(ValueError, match=r"db_lists must hold list ids in"
                     r" \[0, 4\)"):
    retrieval.two_stage_search(queries, anchors, db, labels - 1,
                               num_lists=1, k=3)
  with pytest.raises(ValueError, match="db_lists must be integer list ids"):
    retrieval.two_stage_search(queries, anchors, db, labels + 0.5,
                               num_lists=1, k=3)
  with pytest.raises(ValueError, match=r"queries must be \(n, 3\) like db"):
    retrieval.two_stage_search(queries[:, :2], anchors, db, labels,
                               num_lists=1, k=3)
  with pytest.raises(ValueError, match=r"k must be in \[1, 20\]"):
    retrieval.two_stage_search(queries, anchors, db, labels, num_lists=1,
                               k=0)


def test_exact_search_and_rankings_refuse_mismatched_inputs():
  db, labels = _db()
  with pytest.raises(ValueError, match="must share D"):
    retrieval.exact_search(db[:2, :2], db, 3)
  with pytest.raises(ValueError, match=r"indices must be database indices in"
                     r" \[0, 20\) or -1"):
    retrieval.evaluate_ranking(np.array([[0, 25]]), [0], labels, ks=(1,))
  with pytest.raises(ValueError, match=r"indices must be \(Q, K\) with Q = 2"):
    retrieval.evaluate_ranking(np.array([[0, 1]]), [0, 1], labels, ks=(1,))


def test_index_refuses_float_or_negative_labels_and_stays_unchanged():
  db, labels = _db()
  index = Index.build(db, labels)
  with pytest.raises(ValueError, match="Index.add: labels must be integers,"
                     " got dtype float64"):
    index.add(db[:1], labels=[1.5])
  with pytest.raises(ValueError, match="Index.add: labels must be class ids"
                     " >= 0, got -1"):
    index.add(db[:1], labels=[-1])
  with pytest.raises(ValueError, match=r"Index.add: embeddings must be \(n,"
                     r" 3\)"):
    index.add(db[:1, :2], labels=[1])
  with pytest.raises(ValueError, match="ids are not unique"):
    index.add(db[:1], labels=[1], ids=[3])
  assert len(index) == 20  # nothing was added
  with pytest.raises(ValueError, match="embeddings hold NaN or inf in 1 row"):
    Index.build(np.where(np.arange(20)[:, None] == 4, np.nan, db), labels)
  with pytest.raises(ValueError, match=r"Index.search: k must be in \[1, 20\]"):
    index.search(db[:1], 0)


@pytest.mark.parametrize("field,value,message", [
    ("labels", lambda a: a.astype(np.float64), "field 'labels' must be int64,"
     " got float64"),
    ("labels", lambda a: a - 5, "labels must be class ids >= 0"),
    ("ids", lambda a: a.astype(np.float32), "field 'ids' must be int64"),
    ("embeddings", lambda a: a[:, :2], "anchors must be"),
])
def test_edited_index_files_are_refused_on_load(tmp_path, field, value,
                                                message):
  db, labels = _db()
  path = str(tmp_path / "index.npz")
  Index.build(db, labels, anchors=np.eye(4, 3, dtype=np.float32)).save(path)
  with np.load(path) as f:
    arrays = {name: f[name] for name in f.files}
  arrays[field] = value(arrays[field])
  edited = str(tmp_path / "edited.npz")
  np.savez(edited, **arrays)
  with pytest.raises(ValueError, match=f"{edited}: .*{message}"):
    Index.load(edited)


# Metric invariants on random small cases.
@st.composite
def _cases(draw):
  n = draw(st.integers(3, 12))
  q = draw(st.integers(1, 4))
  db = draw(hnp.arrays(np.float32, (n, 2), elements=st.integers(-3, 3)))
  queries = draw(hnp.arrays(np.float32, (q, 2), elements=st.integers(-3, 3)))
  db_labels = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, 2)))
  q_labels = draw(hnp.arrays(np.int64, (q,), elements=st.integers(0, 2)))
  return queries, q_labels, db, db_labels


def _naive_map(queries, q_labels, db, db_labels):
  """AP from a stable argsort, ties broken against the query (irrelevant
  items first among equal distances), mean over queries with R > 0."""
  aps = []
  for query, label in zip(queries, q_labels):
    d = ((db - query) ** 2).sum(1)
    rel = db_labels == label
    if not rel.any():
      continue
    order = np.lexsort((rel, d))  # by distance, irrelevant first on ties
    hits = np.cumsum(rel[order])
    precision = hits / np.arange(1, len(db) + 1)
    aps.append(precision[rel[order]].sum() / rel.sum())
  return np.mean(aps) if aps else np.nan


@settings
@hypothesis.given(case=_cases(), seed=st.integers(0, 10))
def test_metrics_are_bounded_match_a_reference_and_ignore_order(case, seed):
  queries, q_labels, db, db_labels = case
  result = retrieval.evaluate_retrieval(queries, q_labels, db, db_labels,
                                        ks=(1, 3))
  if result["num_queries"] == 0:
    assert np.isnan(result["map"])
    return
  for name in ("map", "map@3", "precision@1", "recall@3", "mrr",
               "r_precision", "map@r"):
    assert 0.0 <= result[name] <= 1.0, name
  assert result["map"] == pytest.approx(
      _naive_map(queries, q_labels, db, db_labels), abs=1e-9)
  rng = np.random.default_rng(seed)
  db_order, q_order = rng.permutation(len(db)), rng.permutation(len(queries))
  permuted = retrieval.evaluate_retrieval(
      queries[q_order], q_labels[q_order], db[db_order], db_labels[db_order],
      ks=(1, 3))
  for name, value in result.items():
    assert permuted[name] == pytest.approx(value, abs=1e-9), name
