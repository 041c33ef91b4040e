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


def check_kept(kept, num_queries: int, num_lists: int, num_anchors: int,
               where: str = "") -> None:
  """Stage 1's choice given by a caller must be (Q, num_lists) list ids in
  [0, C): a ValueError naming `where` otherwise (an id out of range would
  index another list, or wrap)."""
  if kept is None:
    return
  kept = np.asarray(kept)
  if kept.shape != (num_queries, num_lists) or (
      kept.size and (kept.min() < 0 or kept.max() >= num_anchors)):
    prefix = f"{where}: " if where else ""
    raise ValueError(f"{prefix}kept must be ({num_queries}, {num_lists})"
                     f" list ids in [0, {num_anchors}) (stage 1's choice),"
                     f" got {kept.dtype} {kept.shape}")


def groups_by_list(chosen: np.ndarray, offsets: np.ndarray, total: int):
  """Stage 2's work, list by list: for each chosen list c that holds items,
  (start, stop, length, who, slots): its rows [start, stop), the static
  length it is scored at (`slice_length`), and the queries that chose it
  with the slot they chose it in (chosen[who, slots] == c)."""
  for c in np.unique(chosen):
    start, stop = int(offsets[c]), int(offsets[c + 1])
    if stop == start:
      continue  # an empty list: nothing to find
    who, slots = np.nonzero(chosen == c)
    yield start, stop, slice_length(stop - start, total), who, slots


def pad_to_bucket(queries: np.ndarray) -> np.ndarray:
  """`queries` with zero rows added up to a power of two (few shapes
  compile)."""
  bucket = 1 << max(0, int(len(queries) - 1).bit_length())
  return np.pad(queries, ((0, bucket - len(queries)), (0, 0)))


class Lists(NamedTuple):
  """The database in list-major order, one copy: list c is rows
  offsets[c]:offsets[c + 1] of `vectors`, so stage 2 scores each list as
  one contiguous slice (no padded per-list table).

  vectors: (N, D) float32 rows sorted by list id (stable: a list's rows keep
    their database order). norms: (N,) float32, ||row||^2. offsets: (C + 1,)
    int64 host array. order: (N,) int32 database index of each row, or None
    when the rows are the database itself (the `Index` stores them so).
  """
  vectors: jax.Array
  norms: jax.Array
  offsets: np.ndarray
  order: Optional[jax.Array] = None

  @property
  def sizes(self) -> np.ndarray:
    """Items per list, (C,)."""
    return np.diff(self.offsets)


def list_order(db_lists, num_lists_total: int) -> tuple[np.ndarray,
                                                          np.ndarray]:
  """(order (N,), offsets (C + 1,)): the stable sort of the database by list
  id and where each list starts; list ids must be integers in [0, C)."""
  db_lists = np.asarray(db_lists)
  if db_lists.ndim != 1 or (db_lists.dtype.kind not in "iu" and
                            db_lists.size):
    raise ValueError(f"db_lists must be integer list ids (N,), got"
                     f" {db_lists.dtype} {db_lists.shape}")
  if not db_lists.size:
    raise ValueError("db_lists is empty: the database has no items")
  if db_lists.min() < 0 or db_lists.max() >= num_lists_total:
    raise ValueError(f"db_lists must hold list ids in [0, {num_lists_total}),"
                     f" got values in [{db_lists.min()}, {db_lists.max()}]")
  order = np.argsort(db_lists, kind="stable")
  counts = np.bincount(db_lists, minlength=num_lists_total)
  return order, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def device_rows(db, order: Optional[np.ndarray] = None,
                device: Optional[jax.Device] = None) -> jax.Array:
  """db[order] (N, D) float32 on `device` (default: the default device),
  made from one host copy.

  On CPU `jax.device_put` adopts a 64-byte aligned NumPy buffer without
  copying (measured: jnp.asarray copies, and briefly needs a third copy),
  so the rows are gathered straight into such a buffer: the device array is
  then the only copy. Elsewhere the buffer is freed once transferred."""
  if isinstance(db, jax.Array):
    db = db.astype(jnp.float32)
    return db if order is None else db[jnp.asarray(order)]
  db = np.asarray(db)
  if db.ndim != 2:
    raise ValueError(f"db must be (N, D), got shape {db.shape}")
  rows = aligned_empty(db.shape, np.float32)
  chunk = max(1, (64 << 20) // max(1, db.shape[1] * 4))  # 64 MB at a time
  for start in range(0, len(db), chunk):
    stop = min(start + chunk, len(db))
    if order is None:
      rows[start:stop] = db[start:stop]
    else:  # straight into place: no temporary of the chunk
      np.take(db, order[start:stop], axis=0, out=rows[start:stop])
  return jax.device_put(rows, device)


def aligned_empty(shape, dtype, alignment: int = 64) -> np.ndarray:
  """An uninitialised C-contiguous array whose data is `alignment`-byte
  aligned (what XLA:CPU needs to share it instead of copying)."""
  dtype = np.dtype(dtype)
  size = int(np.prod(shape)) * dtype.itemsize
  raw = np.empty(size + alignment, np.uint8)
  skip = (-raw.ctypes.data) % alignment
  return raw[skip:skip + size].view(dtype).reshape(shape)


def build_lists(db, db_lists, num_lists_total: int) -> Lists:
  """`Lists` of a database (N, D) with list ids (N,) in [0, C): a sorted
  copy of the database (the caller's array is left as it is)."""
  if np.shape(db_lists) != np.shape(db)[:1]:
    raise ValueError(f"db_lists must have shape ({np.shape(db)[0]},), one"
                     f" list id per database item, got {np.shape(db_lists)}")
  order, offsets = list_order(db_lists, num_lists_total)
  vectors = device_rows(db, order)
  return Lists(vectors, scoring.row_norms(vectors), offsets,
               jnp.asarray(order, jnp.int32))


def slice_length(n: int, total: int) -> int:
  """The static length a list of n items is scored at: n rounded up to one
  of 8 steps per octave (m * 2^e, 8 <= m <= 16: at most 12.5 % wasted, few
  distinct shapes to compile), at most `total`."""
  if n <= 16:
    return min(n, total)
  shift = n.bit_length() - 4
  return min(-(-n >> shift) << shift, total)


def score_chunk(length: int) -> Optional[int]:
  """Rows per matrix product when a list slice of `length` is scored in
  chunks: the largest power of two >= 1024 dividing it at most 1/8 of it,
  or None (one product). XLA:CPU copies a dynamic slice before a product
  with it; in chunks the copy stays in cache (measured: 100k x 128 rows
  against 16 queries, 39 ms in one product, 11 ms in 4096-row chunks)."""
  chunk = 1 << max(0, (length // 8).bit_length() - 1)
  while chunk >= 1024 and length % chunk:
    chunk //= 2
  return chunk if chunk >= 1024 else None


@functools.partial(jax.jit, static_argnames=("length", "k"))
def list_top_k(queries, vectors, norms, start, stop, length, k):
  """Top k rows of list [start, stop) for a group of queries: the list is a
  static-length slice of `vectors` (moved back where it would run past the
  end; rows outside [start, stop) masked), scored by matrix products
  (`score_chunk`). Rows -1 past the list's end."""
  first = jnp.clip(start, 0, vectors.shape[0] - length)
  block_norms = jax.lax.dynamic_slice_in_dim(norms, first, length)
  rows = first + jnp.arange(length)
  chunk = score_chunk(length)
  if chunk is None:
    block = jax.lax.dynamic_slice_in_dim(vectors, first, length)
    scores = scoring.scores(queries, block, block_norms)  # (b, length)
  else:
    def score(i, scores):
      block = jax.lax.dynamic_slice_in_dim(vectors, first + i * chunk, chunk)
      part = scoring.scores(queries, block, jax.lax.dynamic_slice_in_dim(
          block_norms, i * chunk, chunk))
      return jax.lax.dynamic_update_slice_in_dim(scores, part, i * chunk, 1)
    scores = jax.lax.fori_loop(
        0, length // chunk, score,
        jnp.zeros((queries.shape[0], length), jnp.float32))
  scores = jnp.where((rows >= start) & (rows < stop), scores, jnp.inf)
  best, pos = scoring.top_k_smallest(scores, k, False)
  return jnp.where(jnp.isfinite(best), rows[pos], -1)


def _stage_two_grouped(queries, chosen, lists: Lists, k):
  """Candidate rows (Q, L * k): per list c, the queries that chose it
  (padded to a power of two, so few shapes compile) against its slice — one
  matrix product per list; a Python loop over lists, never over queries."""
  chosen = np.asarray(chosen)
  host_queries = np.asarray(queries)
  found = np.full(chosen.shape + (k,), -1, np.int32)
  pending = []  # dispatch every list first, then wait once
  for start, stop, length, rows, slots in groups_by_list(
      chosen, lists.offsets, lists.vectors.shape[0]):
    width = min(k, length)
    pending.append((rows, slots, width, list_top_k(
        pad_to_bucket(host_queries[rows]), lists.vectors, lists.norms,
        start, stop, length, width)))
  for rows, slots, width, top in pending:
    found[rows, slots, :width] = np.asarray(top)[:len(rows)]
  return jnp.asarray(found.reshape(chosen.shape[0], -1))


@functools.partial(jax.jit, static_argnames=("width",))
def _stage_two_gathered(chosen, offsets, width):
  """Candidate rows (Q, L * width): every row of the chosen lists."""
  start, stop = offsets[chosen], offsets[chosen + 1]  # (Q, L)
  rows = start[..., None] + jnp.arange(width)
  rows = jnp.where(rows < stop[..., None], rows, -1)
  return rows.reshape(chosen.shape[0], -1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("k",))
def _best_k(queries, vectors, candidates, k):
  """The k nearest candidate rows, exact distances; -1 / inf past the end."""
  d = scoring.direct_distances(queries, vectors, candidates)
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
    lists: `build_lists(db, db_lists, C)`, to reuse across calls (then
      `db` and `db_lists` are not read).
    kept: (Q, num_lists) stage 1's choice, already made (`stage_one`), so
      that a caller can time and rank from the same choice.

  Returns:
    (distances, indices into db), each (Q, k).
  """
  if lists is None:
    if db_lists is None:
      raise ValueError("two_stage_search needs db_lists (or prebuilt lists)")
    _check_matrix("db", db, np.shape(db)[-1])
    lists = build_lists(db, db_lists, np.shape(anchors)[0])
  distances, rows = search_lists(queries, anchors, lists, num_lists=num_lists,
                                 k=k, method=method, query_chunk=query_chunk,
                                 kept=kept)
  if lists.order is not None:
    rows = _original_index(rows, lists.order)
  return distances, rows


@jax.jit
def _original_index(rows, order):
  return jnp.where(rows >= 0, order[jnp.maximum(rows, 0)], -1)


def _check_matrix(name, array, dim):
  if np.ndim(array) != 2 or np.shape(array)[1] != dim:
    raise ValueError(f"{name} must be (n, {dim}) like db, got"
                     f" {np.shape(array)}")


def search_lists(queries, anchors, lists: Lists, *, num_lists: int, k: int,
                 method: Literal["grouped", "gathered"] = "grouped",
                 query_chunk: int = 1024,
                 kept: Optional[np.ndarray] = None):
  """`two_stage_search` on prebuilt `lists`: (distances, rows of
  `lists.vectors`), each (Q, k); row -1 and distance inf = no result."""
  total, dim = lists.vectors.shape
  for name, array in (("queries", queries), ("anchors", anchors)):
    _check_matrix(name, array, dim)
  num_classes = np.shape(anchors)[0]
  if not 1 <= k <= total:
    raise ValueError(f"k must be in [1, {total}] (the database size),"
                     f" got {k}")
  check_num_lists(num_lists, num_classes)
  if method not in ("grouped", "gathered"):
    raise ValueError(f"method must be 'grouped' or 'gathered', got"
                     f" {method!r}")
  if len(lists.offsets) != num_classes + 1:
    raise ValueError(f"lists hold {len(lists.offsets) - 1} lists, but there"
                     f" are {num_classes} anchors")
  check_kept(kept, np.shape(queries)[0], num_lists, num_classes)
  anchors = jnp.asarray(anchors, jnp.float32)
  queries = jnp.asarray(queries, jnp.float32)
  if method == "gathered":  # once, not per chunk
    offsets = jnp.asarray(lists.offsets)
    width = max(1, int(lists.sizes.max()))
  outs = []
  for start in range(0, queries.shape[0], query_chunk):
    chunk = queries[start:start + query_chunk]
    chosen = (stage_one(chunk, anchors, num_lists) if kept is None else
              jnp.asarray(kept[start:start + query_chunk]))
    if method == "grouped":
      candidates = _stage_two_grouped(chunk, chosen, lists, k)
    else:
      candidates = _stage_two_gathered(chosen, offsets, width)
    outs.append(_best_k(chunk, lists.vectors, candidates, k))
  return (jnp.concatenate([o[0] for o in outs]),
          jnp.concatenate([o[1] for o in outs]))
