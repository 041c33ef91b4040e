"""The ranking core: for each query, the ranks of its relevant database items.

Every retrieval number ra_jax reports (mAP and its variants, precision and
recall at k, the precision-recall curve, nearest-anchor accuracy, the
metrics of two-stage rankings) is a function of these ranks alone, so they
are computed in one place (here) and turned into metrics in one place
(`metrics.py`).

A ranking orders the database for a query by squared L2 distance, ascending.
Ranks are 1-based. A relevant and an irrelevant item at exactly the same
distance count the irrelevant one first (the pessimistic choice), so ties
never flatter a model.
"""

import concurrent.futures
import dataclasses
import os
from typing import Iterator, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from ra_jax.distances import pairwise_squared_distances


@dataclasses.dataclass(frozen=True)
class RelevantRanks:
  """Ranks of the relevant items of a block of Q queries.

  Attributes:
    ranks: (Q, W) float64, each row ascending: the 1-based ranks of the
      query's relevant items, then +inf for relevant items the ranking does
      not reach (a truncated top-k ranking) and for padding.
    num_relevant: (Q,) int64, R: how many relevant items the query has in
      the whole database, reached by the ranking or not.
    length: how many database positions the rankings cover (N for a full
      ranking, k for a top-k list).
    complete: whether the rankings cover the whole database, so that
      metrics over all N ranks (mAP, R-precision, MRR) are defined.
  """
  ranks: np.ndarray
  num_relevant: np.ndarray
  length: int
  complete: bool


def ranks_from_distances(distances: np.ndarray, relevant: np.ndarray,
                         first: Optional[np.ndarray] = None
                         ) -> RelevantRanks:
  """The full ranking of each row of `distances` (Q, N), with relevance
  `relevant` (Q, N) bool; entries at +inf are ranked last. `first` (Q, N)
  bool: the finite entries ranked ahead of all others, each part by
  distance (a two-stage search's kept lists; None: one part).

  Only the ranks of relevant items matter: sorting the relevant and the
  irrelevant distances of each part separately and merging them with a
  binary search is cheaper than an argsort of all N items.
  """
  distances = np.asarray(distances)
  relevant = np.asarray(relevant, bool)
  if first is not None:
    first = np.asarray(first, bool) & np.isfinite(distances)
  counts = relevant.sum(axis=1)
  ranks = np.full((len(distances), max(1, int(counts.max(initial=0)))),
                  np.inf)

  def merged(d, mask, offset):
    """(the relevant distances of one part sorted, their ranks after
    `offset` items of earlier parts, how many irrelevant it holds)."""
    mine = np.sort(d[mask])
    others = np.sort(d[~mask])
    return mine, offset + np.arange(1, len(mine) + 1) + np.searchsorted(
        others, mine, side="right"), len(others)

  def rank_rows(rows):
    for row in rows:
      d, mask = distances[row], relevant[row]
      if first is None:
        mine, row_ranks, _ = merged(d, mask, 0)
        ranks[row, :len(mine)] = row_ranks
        continue
      ahead = first[row]
      mine, front, others = merged(d[ahead], mask[ahead], 0)
      ranks[row, :len(mine)] = front
      rest, back, _ = merged(d[~ahead], mask[~ahead], len(mine) + others)
      ranks[row, len(mine):len(mine) + len(rest)] = back

  # NumPy's sort releases the GIL: the rows are ranked on every core
  # (each thread writes its own rows).
  workers = min(os.cpu_count() or 1, max(1, len(distances) // 32))
  if workers > 1:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      list(pool.map(rank_rows, np.array_split(np.arange(len(distances)),
                                              workers)))
  else:
    rank_rows(range(len(distances)))
  return RelevantRanks(ranks, counts.astype(np.int64), distances.shape[1],
                       complete=True)


def ranks_from_rankings(indices: np.ndarray, query_labels: np.ndarray,
                        db_labels: np.ndarray) -> RelevantRanks:
  """Ranks from given rankings (Q, K) of database indices, best first
  (-1 = no result, not relevant), e.g. from `two_stage_search`.

  R counts all of the query's relevant database items, so a ranking that
  misses some is penalised for them. The rankings are complete when they
  list every database item (K = N, no -1)."""
  indices = np.asarray(indices)
  query_labels = np.asarray(query_labels)
  db_labels = np.asarray(db_labels)
  if indices.ndim != 2 or len(indices) != len(query_labels):
    raise ValueError(f"indices must be (Q, K) with Q = {len(query_labels)}"
                     f" (the query labels), got {indices.shape}")
  if indices.size and (indices.dtype.kind not in "iu" or indices.min() < -1
                       or indices.max() >= len(db_labels)):
    raise ValueError(f"indices must be database indices in [0,"
                     f" {len(db_labels)}) or -1, got {indices.dtype} values in"
                     f" [{indices.min()}, {indices.max()}]")
  relevant = (indices >= 0) & (
      db_labels[np.maximum(indices, 0)] == query_labels[:, None])
  positions = np.arange(1, indices.shape[1] + 1, dtype=np.float64)
  ranks = np.sort(np.where(relevant, positions, np.inf), axis=1)
  classes = np.concatenate([db_labels, query_labels])
  offset = int(classes.min(initial=0))
  counts = np.bincount(db_labels - offset,
                       minlength=int(classes.max(initial=0)) - offset + 1)
  num_relevant = counts[query_labels - offset].astype(np.int64)
  complete = (indices.shape[1] == len(db_labels) and bool(np.all(indices >= 0)))
  return RelevantRanks(ranks, num_relevant, indices.shape[1], complete)


@dataclasses.dataclass(frozen=True)
class Ordering:
  """How a full ranking orders the database for each query: by distance
  alone, or (`kept_lists` = (db_lists (N,), query_lists (Q, L)) ints) a
  two-stage search's ranking: the items of the query's kept lists
  `query_lists[q]` by distance, then every other item by distance.
  `exclude_self`: the queries are the database, in the same order, and
  each query's own entry is removed from its ranking."""
  kept_lists: Optional[tuple[np.ndarray, np.ndarray]] = None
  exclude_self: bool = False


def full_rankings(query_emb, query_labels, db_emb, db_labels,
                  orderings: Sequence[Ordering], *, chunk_size: int = 256
                  ) -> Iterator[tuple[slice, list[RelevantRanks]]]:
  """(queries, their ranks under each of `orderings`) block by block: every
  query against the whole database by squared L2 distance (computed on
  device once per block, one matrix product, for every ordering; ranked
  on the host). Memory O(chunk_size * N)."""
  query_labels = np.asarray(query_labels)
  db_labels = np.asarray(db_labels)
  db = jnp.asarray(db_emb, jnp.float32)
  for start in range(0, len(query_labels), chunk_size):
    stop = min(start + chunk_size, len(query_labels))
    distances = np.asarray(pairwise_squared_distances(
        jnp.asarray(query_emb[start:stop], jnp.float32), db))
    relevant = db_labels[None, :] == query_labels[start:stop, None]
    blocks = []
    for ordering in orderings:
      first = None if ordering.kept_lists is None else _kept(
          *ordering.kept_lists, start, stop)
      if not ordering.exclude_self:
        blocks.append(ranks_from_distances(distances, relevant, first))
        continue
      rows = np.arange(stop - start)
      own_d, own_r = distances.copy(), relevant.copy()
      own_r[rows, start + rows] = False
      own_d[rows, start + rows] = np.inf  # ranked last, irrelevant
      block = ranks_from_distances(own_d, own_r, first)
      blocks.append(dataclasses.replace(block, length=block.length - 1))
    yield slice(start, stop), blocks


def full_ranking(query_emb, query_labels, db_emb, db_labels, *,
                 exclude_self: bool = False, chunk_size: int = 256,
                 kept_lists: Optional[tuple[np.ndarray, np.ndarray]] = None
                 ) -> Iterator[tuple[slice, RelevantRanks]]:
  """(queries, their ranks) block by block, under one `Ordering`
  (`full_rankings`)."""
  for block, (ranks,) in full_rankings(
      query_emb, query_labels, db_emb, db_labels,
      [Ordering(kept_lists, exclude_self)], chunk_size=chunk_size):
    yield block, ranks


def _kept(db_lists: np.ndarray, query_lists: np.ndarray, start: int,
          stop: int) -> np.ndarray:
  """(stop - start, N) bool: the items in each query's kept lists."""
  query_lists = np.asarray(query_lists)[start:stop]
  db_lists = np.asarray(db_lists)
  num_lists = int(max(db_lists.max(initial=-1),
                      query_lists.max(initial=-1))) + 1
  table = np.zeros((len(query_lists), num_lists), bool)
  table[np.arange(len(query_lists))[:, None], query_lists] = True
  return table[:, db_lists]


def check_pair(name: str, embeddings, labels: Optional[np.ndarray]) -> None:
  """Embeddings (N, D) with one label each; a ValueError names `name`."""
  shape = np.shape(embeddings)
  if len(shape) != 2:
    raise ValueError(f"{name} embeddings must be (N, D), got shape {shape}")
  if labels is not None and np.shape(labels) != (shape[0],):
    raise ValueError(f"{name} labels must have shape ({shape[0]},) to match"
                     f" the {name} embeddings, got {np.shape(labels)}")
