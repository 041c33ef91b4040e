"""The ranking core against one sort of explicit keys per row and part."""

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from ra_jax.retrieval import ranking

# Small value sets make ties common; the special values are where an
# order-preserving bit trick can go wrong (-0 == 0, negatives, NaN).
VALUES = {"plain": [0.0, 1.0, 2.0, 3.0],
          "special": [-np.inf, -1.5, -0.0, 0.0, 1.0, np.inf, np.nan,
                      -np.nan]}


def _by_hand(d, relevant, first):
  """Each row: the part ranked first (`first`'s finite entries) by
  distance, then the rest by distance; NaN after +inf; an irrelevant entry
  before a relevant one at the same distance."""
  out = []
  for row in range(len(d)):
    part = np.zeros(d.shape[1], int) if first is None else np.where(
        first[row] & np.isfinite(d[row]), 0, 1)
    order = np.lexsort((relevant[row], d[row], part))
    out.append(np.flatnonzero(relevant[row][order]) + 1)
  return out


@hypothesis.given(st.integers(0, 2**16), st.integers(1, 40),
                  st.integers(1, 40), st.sampled_from(sorted(VALUES)),
                  st.sampled_from([np.float32, np.float64]),
                  st.integers(0, 3))
@hypothesis.settings(deadline=None, max_examples=60)
def test_every_ordering_of_one_sort_is_its_own_sort_by_hand(
    seed, rows, items, values, dtype, num_parts):
  """`rank_rows` ranks several orderings from one sort of each row; each
  equals the row sorted by hand (float32 takes the packed-key path, float64
  np.lexsort). Rows are split over threads from 64 rows up."""
  rng = np.random.default_rng(seed)
  d = rng.choice(np.array(VALUES[values], dtype), (rows, items))
  relevant = rng.random((rows, items)) < 0.4
  firsts = [None] + [rng.random((rows, items)) < p
                     for p in rng.random(num_parts)]
  parts = [None if f is None else
           (lambda order, r, _, f=f: np.take_along_axis(f[r], order, axis=1))
           for f in firsts]
  got = ranking.rank_rows(d, relevant, parts)
  for first, ranks in zip(firsts, got):
    assert ranks.ranks.shape == (rows, max(1, relevant.sum(1).max()))
    np.testing.assert_array_equal(ranks.num_relevant, relevant.sum(1))
    for row, want in enumerate(_by_hand(d, relevant, first)):
      np.testing.assert_array_equal(ranks.ranks[row, :len(want)], want)
      assert np.all(np.isinf(ranks.ranks[row, len(want):]))


def test_threads_rank_as_one_thread_does(monkeypatch):
  """Enough rows to be split over threads give what one thread gives."""
  rng = np.random.default_rng(0)
  d = rng.integers(0, 50, (200, 300)).astype(np.float32)
  relevant = rng.random((200, 300)) < 0.3
  first = rng.random((200, 300)) < 0.5
  part = lambda order, r, _: np.take_along_axis(first[r], order, axis=1)
  monkeypatch.setattr("os.cpu_count", lambda: 4)
  split = ranking.rank_rows(d, relevant, [None, part])
  monkeypatch.setattr("os.cpu_count", lambda: 1)
  whole = ranking.rank_rows(d, relevant, [None, part])
  for a, b in zip(split, whole):
    np.testing.assert_array_equal(a.ranks, b.ranks)


def test_a_part_of_every_item_is_the_plain_ranking():
  rng = np.random.default_rng(1)
  d = rng.integers(0, 4, (5, 30)).astype(np.float32)
  d[rng.random((5, 30)) < 0.15] = np.inf
  relevant = rng.random((5, 30)) < 0.4
  plain = ranking.ranks_from_distances(d, relevant)
  every = ranking.ranks_from_distances(d, relevant, np.ones((5, 30), bool))
  np.testing.assert_array_equal(plain.ranks, every.ranks)


def test_mismatched_shapes_are_refused():
  with pytest.raises(ValueError, match=r"same \(Q, N\) shape"):
    ranking.rank_rows(np.zeros((2, 3), np.float32), np.zeros((2, 4), bool),
                      [None])


def test_kept_lists_beyond_the_databases_lists_match_no_item():
  """A query may keep a list no database item is in (an anchor no item is
  nearest to); its id must not wrap onto a list that has items when the
  lists are narrowed (259 is 3 in int8)."""
  rng = np.random.default_rng(0)
  db_lists = rng.integers(0, 4, 50)
  query_lists = np.array([[259, 2], [3, 3], [1, 300]])
  query = rng.integers(-3, 4, (3, 2)).astype(np.float32)  # exact distances
  db = rng.integers(-3, 4, (50, 2)).astype(np.float32)
  query_labels, db_labels = np.arange(3), rng.integers(0, 3, 50)
  (_, [got]), = ranking.full_rankings(
      query, query_labels, db, db_labels,
      [ranking.Ordering((db_lists, query_lists))])
  distances = ((query[:, None] - db[None]) ** 2).sum(-1)
  first = np.stack([np.isin(db_lists, kept) for kept in query_lists])
  want = ranking.ranks_from_distances(
      distances, db_labels[None] == query_labels[:, None], first)
  np.testing.assert_array_equal(got.ranks, want.ranks)
