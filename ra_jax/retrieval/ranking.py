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
from typing import Iterator, Optional

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


def ranks_from_distances(distances: np.ndarray, relevant: np.ndarray
                         ) -> RelevantRanks:
  """The full ranking of each row of `distances` (Q, N), with relevance
  `relevant` (Q, N) bool; entries at +inf are ranked last.

  Only the ranks of relevant items matter: sorting the relevant and the
  irrelevant distances of a row separately and merging them with a binary
  search is cheaper than an argsort of all N items.
  """
  distances = np.asarray(distances)
  relevant = np.asarray(relevant, bool)
  counts = relevant.sum(axis=1)
  ranks = np.full((len(distances), max(1, int(counts.max(initial=0)))),
                  np.inf)

  def rank_rows(rows):
    for row in rows:
      d, mask = distances[row], relevant[row]
      mine = np.sort(d[mask])
      others = np.sort(d[~mask])
      order = np.arange(1, len(mine) + 1)
      ranks[row, :len(mine)] = order + np.searchsorted(others, mine,
                                                       side="right")

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


def full_ranking(query_emb, query_labels, db_emb, db_labels, *,
                 exclude_self: bool = False, chunk_size: int = 256,
                 kept_lists: Optional[tuple[np.ndarray, np.ndarray]] = None
                 ) -> Iterator[tuple[slice, RelevantRanks]]:
  """(queries, their ranks) block by block: every query against the whole
  database by squared L2 distance (computed on device, one matrix product
  per block; ranked on the host). `exclude_self`: the queries are the
  database, in the same order, and each query's own entry is removed from
  its ranking. Memory O(chunk_size * N).

  `kept_lists` = (db_lists (N,), query_lists (Q, L)): the ranking of a
  two-stage search that keeps lists `query_lists[q]` for query q: the items
  of those lists by distance, then every other item by distance."""
  query_labels = np.asarray(query_labels)
  db_labels = np.asarray(db_labels)
  db = jnp.asarray(db_emb, jnp.float32)
  for start in range(0, len(query_labels), chunk_size):
    stop = min(start + chunk_size, len(query_labels))
    distances = np.array(pairwise_squared_distances(  # a writable copy
        jnp.asarray(query_emb[start:stop], jnp.float32), db))
    if kept_lists is not None:
      distances = _kept_first(distances, kept_lists[0],
                              kept_lists[1][start:stop])
    relevant = db_labels[None, :] == query_labels[start:stop, None]
    if exclude_self:
      rows = np.arange(stop - start)
      relevant[rows, start + rows] = False
      distances[rows, start + rows] = np.inf  # ranked last, irrelevant
    block = ranks_from_distances(distances, relevant)
    if exclude_self:  # one fewer item in each ranking
      block = dataclasses.replace(block, length=block.length - 1)
    yield slice(start, stop), block


def _kept_first(distances: np.ndarray, db_lists: np.ndarray,
                query_lists: np.ndarray) -> np.ndarray:
  """Distances (q, N) moved up, for items outside each row's kept lists,
  by more than the row's largest distance: those rank after every kept
  item and keep their order among themselves."""
  distances = distances.astype(np.float64)
  outside = np.ones(distances.shape, bool)
  for kept in np.asarray(query_lists).T:  # (q, N) at a time, not (q, N, L)
    outside &= db_lists[None, :] != kept[:, None]
  finite = np.where(np.isfinite(distances), distances, 0.0)
  shift = finite.max(axis=1, keepdims=True) + 1.0
  return distances + np.where(outside, shift, 0.0)


def check_pair(name: str, embeddings, labels: Optional[np.ndarray]) -> None:
  """Embeddings (N, D) with one label each; a ValueError names `name`."""
  shape = np.shape(embeddings)
  if len(shape) != 2:
    raise ValueError(f"{name} embeddings must be (N, D), got shape {shape}")
  if labels is not None and np.shape(labels) != (shape[0],):
    raise ValueError(f"{name} labels must have shape ({shape[0]},) to match"
                     f" the {name} embeddings, got {np.shape(labels)}")
