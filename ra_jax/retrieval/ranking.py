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
from typing import Callable, Iterator, Optional, Sequence

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
  `relevant` (Q, N) bool; entries at +inf are ranked last (NaN after
  them). `first` (Q, N) bool: the finite entries ranked ahead of all
  others, each part by distance (a two-stage search's kept lists; None:
  one part)."""
  distances = np.asarray(distances)
  part = None if first is None else (
      lambda order, rows, scratch: np.take_along_axis(
          np.asarray(first, bool)[rows], order, axis=1))
  return rank_rows(distances, relevant, [part])[0]


# In sorted order, which items of rows `rows` (a slice) a part ranks first:
# called with the rows' sort order (q, N) and a dict the parts of one call
# share for those rows (e.g. a gather they all need).
Part = Callable[[np.ndarray, slice, dict], np.ndarray]
# Rows sorted together: bounds the keyed sort's temporaries (about 30
# bytes per item) to ~60 MB per thread at N = 60,000, 1 GB at N = 1M.
ROWS_PER_TASK = 32


def rank_rows(distances: np.ndarray, relevant: np.ndarray,
              parts: Sequence[Optional[Part]]) -> list[RelevantRanks]:
  """`ranks_from_distances` under several orderings of the same rows, each
  row sorted once: None ranks by distance alone; a `Part` ranks its finite
  items first, then the others, each by distance.

  With the row's items sorted once by (distance, relevance) — irrelevant
  first among equal distances, the tie rule — an item's rank inside its
  part is how many items of its part come up to it in that order: one
  cumulative sum per ordering instead of a sort.
  """
  distances = np.asarray(distances)
  relevant = np.asarray(relevant, bool)
  if distances.ndim != 2 or relevant.shape != distances.shape:
    raise ValueError(f"distances and relevant must be the same (Q, N) shape,"
                     f" got {distances.shape} and {relevant.shape}")
  counts = relevant.sum(axis=1)
  width = max(1, int(counts.max(initial=0)))
  out = [np.full((len(distances), width), np.inf) for _ in parts]

  def rank(rows: slice) -> None:
    if all(part is None for part in parts):
      for row in range(rows.start, rows.stop):
        ranks = _plain_ranks(distances[row], relevant[row])
        for plain in out:
          plain[row, :len(ranks)] = ranks
      return
    order, relevant_sorted, finite = _sort_rows(distances[rows],
                                                relevant[rows])
    scratch: dict = {}
    n = distances.shape[1]
    query, position = np.nonzero(relevant_sorted)  # row-major: ascending
    row_counts = counts[rows]
    row_starts = np.cumsum(row_counts) - row_counts
    within = np.arange(len(query)) - np.repeat(row_starts, row_counts)
    flat = query * n + position
    for part, ranks in zip(parts, out):
      ranks = ranks[rows]
      if part is None:
        ranks[query, within] = position + 1
        continue
      ahead = np.asarray(part(order, rows, scratch), bool)
      if finite is not None:
        ahead &= finite
      ahead_so_far = np.cumsum(ahead, axis=1, dtype=_count_type(n))
      before = ahead_so_far.ravel()[flat]
      in_front = ahead.ravel()[flat]
      # The relevant items of the first part, then those of the rest, each
      # in sorted order: a stable partition of each row's items.
      front_so_far = np.concatenate([[0], np.cumsum(in_front)])
      front_before_row = front_so_far[row_starts][query]
      front_rank = front_so_far[1:] - front_before_row
      front_count = (front_so_far[row_starts + row_counts] -
                     front_so_far[row_starts])[query]
      ranks[query, np.where(in_front, front_rank - 1,
                            front_count + within - front_rank)] = np.where(
          in_front, before, ahead_so_far[query, -1] + position + 1 - before)

  # NumPy's sort, gathers and sums release the GIL: the rows are ranked on
  # every core (each task writes its own rows).
  workers = min(os.cpu_count() or 1,
                max(1, len(distances) // ROWS_PER_TASK))
  tasks = max(workers, -(-len(distances) // ROWS_PER_TASK))
  blocks = [slice(b[0], b[-1] + 1) for b in np.array_split(
      np.arange(len(distances)), tasks) if len(b)]
  if workers > 1 and len(blocks) > 1:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      list(pool.map(rank, blocks))
  else:
    for block in blocks:
      rank(block)
  return [RelevantRanks(ranks, counts.astype(np.int64), distances.shape[1],
                        complete=True) for ranks in out]


def _plain_ranks(distances: np.ndarray, relevant: np.ndarray) -> np.ndarray:
  """The ranks of one row's relevant items ranked by distance alone.

  Only their ranks matter: sorting the relevant and the irrelevant
  distances apart and merging them with a binary search takes half the
  time of `_sort_rows`' one sort of keys that carry the item (what the
  other orderings need)."""
  mine = np.sort(distances[relevant])
  others = np.sort(distances[~relevant])
  return np.arange(1, len(mine) + 1) + np.searchsorted(others, mine,
                                                        side="right")


def _count_type(n: int) -> type:
  return np.int32 if n < 2**31 else np.int64


def _sort_rows(distances: np.ndarray, relevant: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
  """Each row sorted by distance, an irrelevant item before a relevant one
  at the same distance (-0 equals 0, NaN after +inf): (the sort order
  (Q, N), relevance in that order, which entries in that order are finite
  (None when all are)).

  float32 rows sort as one uint64 key per item — the distance's bits made
  order-preserving, the relevance, the index — which is about twice as
  fast as an argsort; other dtypes by np.lexsort."""
  n = distances.shape[1]
  all_finite = bool(np.isfinite(distances).all())
  if distances.dtype != np.float32 or n >= 2**31:
    order = np.lexsort((relevant, distances), axis=1)
    finite = None if all_finite else np.take_along_axis(
        np.isfinite(distances), order, axis=1)
    return order, np.take_along_axis(relevant, order, axis=1), finite
  d = distances + np.float32(0.0)  # -0.0 -> +0.0
  nan = np.isnan(d)
  if nan.any():
    d[nan] = np.float32(np.nan)  # one NaN, whatever its sign bit
  key = _ordered_bits(d).astype(np.uint64) << np.uint64(32)
  key |= relevant.astype(np.uint64) << np.uint64(31)
  key |= np.arange(n, dtype=np.uint64)
  key.sort(axis=1)
  # the index bits as int64: the same bits, no copy
  order = (key & np.uint64(2**31 - 1)).view(np.int64)
  relevant_sorted = (key & np.uint64(2**31)) != 0
  finite = None
  if not all_finite:
    bits = (key >> np.uint64(32)).astype(np.uint32)
    infinities = _ordered_bits(np.array([-np.inf, np.inf], np.float32))
    finite = (bits > infinities[0]) & (bits < infinities[1])
  return order, relevant_sorted, finite


def _ordered_bits(values: np.ndarray) -> np.ndarray:
  """float32 -> uint32 whose integer order is the floats' order: IEEE
  floats order as integers once negatives have every bit flipped and
  positives their sign bit."""
  bits = values.view(np.uint32)
  return bits ^ np.where(bits >> 31, np.uint32(0xFFFFFFFF),
                         np.uint32(0x80000000))


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
  device once per block, one matrix product, for every ordering; each row
  sorted once on the host for every ordering that treats the query's own
  entry alike). Memory O(chunk_size * N)."""
  query_labels = np.asarray(query_labels)
  db_labels = np.asarray(db_labels)
  db = jnp.asarray(db_emb, jnp.float32)
  # Each list assignment narrowed once (it is gathered into sorted order
  # per task), in a type that holds every list id its orderings keep.
  kept_of: dict[int, list] = {}
  for o in orderings:
    if o.kept_lists is not None:
      kept_of.setdefault(id(o.kept_lists[0]), [o.kept_lists[0]]).append(
          o.kept_lists[1])
  db_lists = {key: _narrow(lists[0], lists[1:])
              for key, lists in kept_of.items()}
  for start in range(0, len(query_labels), chunk_size):
    stop = min(start + chunk_size, len(query_labels))
    distances = np.asarray(pairwise_squared_distances(
        jnp.asarray(query_emb[start:stop], jnp.float32), db))
    relevant = db_labels[None, :] == query_labels[start:stop, None]
    blocks: list[Optional[RelevantRanks]] = [None] * len(orderings)
    for exclude_self in sorted({o.exclude_self for o in orderings}):
      chosen = [i for i, o in enumerate(orderings)
                if o.exclude_self == exclude_self]
      d, r = distances, relevant
      if exclude_self:
        rows = np.arange(stop - start)
        d, r = distances.copy(), relevant.copy()
        r[rows, start + rows] = False
        d[rows, start + rows] = np.inf  # ranked last, irrelevant
      parts = [None if orderings[i].kept_lists is None else _kept_part(
          db_lists[id(orderings[i].kept_lists[0])],
          np.asarray(orderings[i].kept_lists[1])[start:stop])
               for i in chosen]
      for i, block in zip(chosen, rank_rows(d, r, parts)):
        blocks[i] = block if not exclude_self else dataclasses.replace(
            block, length=block.length - 1)
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


def _narrow(db_lists, query_lists: Sequence) -> np.ndarray:
  """`db_lists` in the smallest integer type that holds every list id of
  them and of `query_lists` (a kept id beyond the database's must not wrap
  onto one of its lists); a gather of (Q, N) of them per block."""
  values = [np.asarray(db_lists)] + [np.asarray(q) for q in query_lists]
  low = min(int(v.min(initial=0)) for v in values)
  high = max(int(v.max(initial=0)) for v in values)
  return values[0].astype(np.promote_types(np.min_scalar_type(low),
                                           np.min_scalar_type(high)),
                          copy=False)


def _kept_part(db_lists: np.ndarray, query_lists: np.ndarray) -> Part:
  """The `Part` of a two-stage ranking: the items in the query's kept lists
  `query_lists` (q, L). The rows' db_lists in sorted order are gathered
  once per task, for every ordering with lists of the same assignment."""
  query_lists = np.asarray(query_lists)

  def ahead(order: np.ndarray, rows: slice, scratch: dict) -> np.ndarray:
    if id(db_lists) not in scratch:
      scratch[id(db_lists)] = db_lists[order]
    lists = scratch[id(db_lists)]
    kept = query_lists[rows].astype(lists.dtype)
    mine = lists == kept[:, :1]
    for column in range(1, kept.shape[1]):
      mine |= lists == kept[:, column:column + 1]
    return mine

  return ahead


def check_pair(name: str, embeddings, labels: Optional[np.ndarray]) -> None:
  """Embeddings (N, D) with one label each; a ValueError names `name`."""
  shape = np.shape(embeddings)
  if len(shape) != 2:
    raise ValueError(f"{name} embeddings must be (N, D), got shape {shape}")
  if labels is not None and np.shape(labels) != (shape[0],):
    raise ValueError(f"{name} labels must have shape ({shape[0]},) to match"
                     f" the {name} embeddings, got {np.shape(labels)}")
