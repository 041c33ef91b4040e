"""The paper's two-stage search: compare a query with the class anchors
first (stage 1), then rank by L2 distance only the database items of the
nearest lists (stage 2).

Results are (distances, indices), each (Q, k), nearest first; padded or
missing results have distance inf and index -1.
"""

import functools
from typing import Literal, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from ra_jax.distances import nearest
from ra_jax.retrieval import scoring



def check_num_lists(num_lists: Union[int, Sequence[int]], num_anchors: int,
                    what: str = "num_lists") -> None:
  """Lists kept by stage 1 must be in [1, C]: a ValueError naming `what`
  (the argument or config field) and the value otherwise. `num_lists`: one
  count or several."""
  single = isinstance(num_lists, (int, np.integer))
  values = [int(num_lists)] if single else [int(n) for n in num_lists]
  if not all(1 <= n <= num_anchors for n in values):
    shown = values[0] if single else tuple(values)
    raise ValueError(f"{what} {shown}: {'' if single else 'each '}must be in"
                     f" [1, {num_anchors}] (the number of anchors)")


class Lists(NamedTuple):
  """The database cut into lists (classes), ready for stage 2.

  index: (C, L_max) int32, row c = database indices of list c, ascending,
    then -1 padding. vectors: (C, L_max, D+1) the items' augmented vectors
    [x, ||x||^2] (zeros for padding), so each list is one matrix product.
  """
  index: jax.Array
  vectors: jax.Array


def list_table(db_lists, num_lists_total: Optional[int] = None) -> np.ndarray:
  """Padded per-list index table (C, L_max): row c holds the database
  indices whose list id is c, ascending, then -1 padding."""
  db_lists = np.asarray(db_lists)
  if db_lists.ndim != 1 or (db_lists.dtype.kind not in "iu" and
                            db_lists.size):
    raise ValueError(f"db_lists must be integer list ids (N,), got"
                     f" {db_lists.dtype} {db_lists.shape}")
  if not db_lists.size:
    raise ValueError("db_lists is empty: the database has no items")
  total = int(db_lists.max()) + 1 if num_lists_total is None else (
      num_lists_total)
  if db_lists.min() < 0 or db_lists.max() >= total:
    raise ValueError(f"db_lists must hold list ids in [0, {total}), got"
                     f" values in [{db_lists.min()}, {db_lists.max()}]")
  order = np.argsort(db_lists, kind="stable")
  counts = np.bincount(db_lists, minlength=total)
  table = np.full((total, max(1, counts.max())), -1, np.int32)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  for c in range(total):
    table[c, :counts[c]] = order[starts[c]:starts[c] + counts[c]]
  return table


def build_lists(db, db_lists, num_lists_total: int) -> Lists:
  """`Lists` of a database (N, D) with list ids (N,) in [0, C)."""
  if np.shape(db_lists) != np.shape(db)[:1]:
    raise ValueError(f"db_lists must have shape ({np.shape(db)[0]},), one"
                     f" list id per database item, got {np.shape(db_lists)}")
  index = jnp.asarray(list_table(db_lists, num_lists_total))
  return Lists(index, _augmented_rows(jnp.asarray(db, jnp.float32), index))


@jax.jit
def _augmented_rows(db, index):
  # One program, so the augmented (N, D + 1) copy of the whole database is
  # never materialised next to the per-list table (5 GB at 10M x 128).
  return scoring.augment_db(db)[jnp.maximum(index, 0)]


@functools.partial(jax.jit, static_argnames=("k",))
def _list_top_k(queries, vectors, index, c, k):
  """Top k of a group of queries within list c: one matrix product. The
  list is sliced inside the jitted call, so no (L_max, D) copy is made per
  call outside it."""
  list_vectors = jax.lax.dynamic_index_in_dim(vectors, c, keepdims=False)
  list_index = jax.lax.dynamic_index_in_dim(index, c, keepdims=False)
  scores = scoring.scores(queries, list_vectors)  # (b, L_max)
  scores = jnp.where(list_index >= 0, scores, jnp.inf)
  _, pos = scoring.top_k_smallest(scores, min(k, scores.shape[1]), False)
  return list_index[pos]


def _stage_two_grouped(queries, chosen, lists, k):
  """Candidates (Q, L * k'): per list c, the queries that chose it (padded to
  a power of two, so few shapes compile) against its items — one matrix
  product per list; a Python loop over lists, never over queries."""
  chosen = np.asarray(chosen)
  host_queries = np.asarray(queries)
  width = min(k, lists.index.shape[1])
  found = np.full(chosen.shape + (width,), -1, np.int32)
  pending = []  # dispatch every list first, then wait once
  for c in np.unique(chosen):
    rows, slots = np.nonzero(chosen == c)
    bucket = 1 << max(0, int(len(rows) - 1).bit_length())
    group = np.pad(host_queries[rows], ((0, bucket - len(rows)), (0, 0)))
    pending.append((rows, slots, _list_top_k(group, lists.vectors,
                                             lists.index, int(c), k)))
  for rows, slots, top in pending:
    found[rows, slots] = np.asarray(top)[:len(rows)]
  return jnp.asarray(found.reshape(chosen.shape[0], -1))


@jax.jit
def _stage_two_gathered(queries, chosen, index):
  """Candidates (Q, L * L_max): every item of the chosen lists, gathered."""
  return index[chosen].reshape(queries.shape[0], -1)


@functools.partial(jax.jit, static_argnames=("k",))
def _best_k(queries, db, candidates, k):
  """The k nearest candidates, exact distances; -1 / inf past the end."""
  d = scoring.direct_distances(queries, db, candidates)
  width = min(k, d.shape[1])
  top_d, pos = scoring.top_k_smallest(d, width, False)
  top_i = jnp.where(jnp.isfinite(top_d),
                    jnp.take_along_axis(candidates, pos, axis=1), -1)
  return (jnp.pad(top_d, ((0, 0), (0, k - width)), constant_values=jnp.inf),
          jnp.pad(top_i, ((0, 0), (0, k - width)), constant_values=-1))


def stage_one(queries, anchors, num_lists: int) -> jax.Array:
  """Stage 1: the `num_lists` lists (anchors) nearest each query, (Q, L),
  nearest first (ties to the lower index)."""
  return nearest(jnp.asarray(queries, jnp.float32),
                 jnp.asarray(anchors, jnp.float32), num_lists)[1]


def two_stage_search(queries, anchors, db, db_lists, *, num_lists: int,
                     k: int,
                     method: Literal["grouped", "gathered"] = "grouped",
                     query_chunk: int = 1024,
                     lists: Optional[Lists] = None,
                     kept: Optional[np.ndarray] = None):
  """The paper's two-stage retrieval: anchors first, then those lists only.

  Stage 1 keeps the `num_lists` anchors nearest to each query
  (`stage_one`); stage 2 ranks by L2 distance only the database items
  whose list id (class) is among them. Items outside the kept lists are
  not returned: slots beyond the candidates hold index -1, distance inf.
  With num_lists = C (every list) it returns the same indices as
  `exact_search` (distances equal up to float rounding). The full ranking
  such a search implies, for mAP over the whole database, is
  `search_evaluation.two_stage_full_ranking`.

  Args:
    queries: (Q, D). anchors: (C, D) class anchors. db: (N, D).
    db_lists: (N,) int list id of each database item in [0, C): the database
      labels, or `nearest_anchor(db, anchors)` for an unlabelled database.
    num_lists: lists kept in stage 1 (1 <= num_lists <= C).
    k: results per query.
    method: "grouped" — one matrix product per list for the queries that
      chose it (fast; the host loops over lists); "gathered" — every
      candidate vector gathered per query (pure jit, memory-bound, memory
      O(query_chunk * num_lists * L_max * D)).
    query_chunk: queries per step.
    lists: `build_lists(db, db_lists, C)`, to reuse across calls.
    kept: (Q, num_lists) stage 1's choice, already made (`stage_one`), so
      that a caller can time and rank from the same choice.

  Returns:
    (distances, indices), each (Q, k).
  """
  anchors = jnp.asarray(anchors, jnp.float32)
  queries = jnp.asarray(queries, jnp.float32)
  db = jnp.asarray(db, jnp.float32)
  num_classes = anchors.shape[0]
  for name, array in (("queries", queries), ("anchors", anchors),
                      ("db", db)):
    if array.ndim != 2 or array.shape[1] != db.shape[-1]:
      raise ValueError(f"{name} must be (n, {db.shape[-1]}) like db, got"
                       f" {array.shape}")
  if not 1 <= k <= db.shape[0]:
    raise ValueError(f"k must be in [1, {db.shape[0]}] (the database size),"
                     f" got {k}")
  check_num_lists(num_lists, num_classes)
  if method not in ("grouped", "gathered"):
    raise ValueError(f"method must be 'grouped' or 'gathered', got"
                     f" {method!r}")
  if kept is not None and np.shape(kept) != (queries.shape[0], num_lists):
    raise ValueError(f"kept must be ({queries.shape[0]}, {num_lists}) (one"
                     f" row of list ids per query), got {np.shape(kept)}")
  if lists is None:
    if db_lists is None:
      raise ValueError("two_stage_search needs db_lists (or prebuilt lists)")
    lists = build_lists(db, db_lists, num_classes)
  elif lists.index.shape[0] != num_classes:
    raise ValueError(f"lists hold {lists.index.shape[0]} lists, but there are"
                     f" {num_classes} anchors")
  outs = []
  for start in range(0, queries.shape[0], query_chunk):
    chunk = queries[start:start + query_chunk]
    chosen = (stage_one(chunk, anchors, num_lists) if kept is None else
              jnp.asarray(kept[start:start + query_chunk]))
    if method == "grouped":
      candidates = _stage_two_grouped(chunk, chosen, lists, k)
    else:
      candidates = _stage_two_gathered(chunk, chosen, lists.index)
    outs.append(_best_k(chunk, db, candidates, k))
  return (jnp.concatenate([o[0] for o in outs]),
          jnp.concatenate([o[1] for o in outs]))
