"""Nearest-neighbour search on device: exact (optionally with the database
sharded over a mesh) and the paper's two-stage anchor search.

Distances are squared L2 throughout; results are (distances, indices), each
(Q, k), nearest first; padded / missing results have distance inf and index
-1. Candidates are found with the matrix-product expansion (fast), and the
returned distances are recomputed from the differences (exact, no
cancellation) and the k results re-sorted by them. Everything is
jit-compiled and vectorised over a chunk of queries.
"""

import functools
from typing import Literal, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ra_jax.distances import pairwise_squared_distances

Outside = Literal["absent", "append"]


def _direct_distances(queries, db, indices):
  """||q - db[i]||^2 for indices (q, k) computed from the differences (no
  matrix-product expansion, so no cancellation); inf where index is -1."""
  vectors = db[jnp.maximum(indices, 0)]
  d = jnp.sum(jnp.square(vectors - queries[:, None, :]), axis=-1)
  return jnp.where(indices >= 0, d, jnp.inf)


def _refine(queries, db, indices):
  """Exact distances of the found items, re-sorted (stable) by them."""
  d = _direct_distances(queries, db, indices)
  order = jnp.argsort(d, axis=1, stable=True)
  return (jnp.take_along_axis(d, order, axis=1),
          jnp.take_along_axis(indices, order, axis=1))


def _top_k_smallest(distances, k, approx):
  if approx:  # a real speed-up on TPU only; exact elsewhere
    neg, idx = jax.lax.approx_max_k(-distances, k)
  else:
    neg, idx = jax.lax.top_k(-distances, k)
  return -neg, idx


@jax.jit
def _augment_db(db):
  """[x, ||x||^2] (N, D+1): one matrix product then gives ranking scores."""
  return jnp.concatenate([db, jnp.sum(jnp.square(db), 1, keepdims=True)], 1)


def _scores(queries, db_augmented):
  """||x||^2 - 2 q.x for every pair (Q, N): squared L2 minus the per-query
  constant ||q||^2, so the same ranking, from a single matrix product with no
  elementwise pass over the (Q, N) result."""
  q_augmented = jnp.concatenate(
      [-2.0 * queries, jnp.ones((queries.shape[0], 1), queries.dtype)], 1)
  return jnp.matmul(q_augmented, db_augmented.T,
                    precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=("k", "db_chunk", "approx"))
def _exact_chunk(queries, db, db_augmented, k, db_chunk, approx):
  """Top k of a query chunk against the db, scanning db chunks of db_chunk."""
  num_db = db.shape[0]
  if db_chunk >= num_db:
    scores = _scores(queries, db_augmented)
    return _refine(queries, db, _top_k_smallest(scores, k, approx)[1])
  num_chunks = -(-num_db // db_chunk)
  padded = jnp.pad(db_augmented, ((0, num_chunks * db_chunk - num_db), (0, 0)))
  blocks = padded.reshape(num_chunks, db_chunk, -1)

  def step(carry, inputs):
    best_s, best_i = carry
    block, offset = inputs
    scores = _scores(queries, block)
    index = offset + jnp.arange(db_chunk)
    scores = jnp.where(index < num_db, scores, jnp.inf)
    block_s, block_i = _top_k_smallest(scores, min(k, db_chunk), approx)
    merged_s = jnp.concatenate([best_s, block_s], axis=1)
    merged_i = jnp.concatenate([best_i, offset + block_i], axis=1)
    top_s, pos = _top_k_smallest(merged_s, k, False)
    return (top_s, jnp.take_along_axis(merged_i, pos, axis=1)), None

  init = (jnp.full((queries.shape[0], k), jnp.inf, queries.dtype),
          jnp.full((queries.shape[0], k), -1, jnp.int32))
  offsets = jnp.arange(num_chunks, dtype=jnp.int32) * db_chunk
  (_, best_i), _ = jax.lax.scan(step, init, (blocks, offsets))
  return _refine(queries, db, best_i)


def exact_search(queries, db, k: int, *, query_chunk: int = 128,
                 db_chunk: int = 1 << 20, mesh: Optional[Mesh] = None,
                 axis: str = "data", approx: bool = False):
  """Exact k nearest database items of each query (squared L2).

  Args:
    queries: (Q, D). db: (N, D). k: neighbours per query (<= N).
    query_chunk: queries per jitted call; 64-128 keeps the (chunk, N) scores
      cache-friendly (measured in docs/benchmarks.md).
    db_chunk: database items per scan step (bounds memory to
      query_chunk x db_chunk scores for very large databases).
    mesh: shard the database over `mesh` axis `axis`: each device finds its
      local top k, then the k best of the gathered candidates are kept.
    approx: use `jax.lax.approx_max_k` (faster on TPU only; exact on CPU/GPU).

  Returns:
    (distances, indices), each (Q, k), nearest first.
  """
  queries = jnp.asarray(queries, jnp.float32)
  db = jnp.asarray(db, jnp.float32)
  if not 0 < k <= db.shape[0]:
    raise ValueError(f"k must be in [1, {db.shape[0]}], got {k}")
  if mesh is None:
    db_augmented = _augment_db(db)
    search = lambda q: _exact_chunk(q, db, db_augmented, k, db_chunk, approx)
  else:
    search = _sharded_search(db, k, mesh, axis, approx)
  outs = [search(queries[s:s + query_chunk])
          for s in range(0, queries.shape[0], query_chunk)]
  return (jnp.concatenate([o[0] for o in outs]),
          jnp.concatenate([o[1] for o in outs]))


def _sharded_search(db, k, mesh, axis, approx):
  """Local top k on each device's database shard, then a global merge."""
  devices = mesh.shape[axis]
  num_db = db.shape[0]
  shard = -(-num_db // devices)
  if shard < k:
    raise ValueError(f"each of the {devices} database shards holds {shard}"
                     f" items, fewer than k={k}")
  padded = jnp.pad(db, ((0, shard * devices - num_db), (0, 0)))
  sharding = NamedSharding(mesh, P(axis))
  db_sharded = jax.device_put(padded, sharding)
  augmented = jax.device_put(_augment_db(db_sharded), sharding)

  # Every device merges the same gathered candidates, so the result is
  # replicated; check_vma cannot infer that through top_k.
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), P(axis)),
                     out_specs=(P(), P()), check_vma=False)
  def local_then_merge(queries, local_augmented):
    offset = jax.lax.axis_index(axis) * shard
    scores = _scores(queries, local_augmented)
    scores = jnp.where(offset + jnp.arange(shard) < num_db, scores, jnp.inf)
    local_s, local_i = _top_k_smallest(scores, k, approx)
    all_s = jax.lax.all_gather(local_s, axis, axis=1, tiled=True)
    all_i = jax.lax.all_gather(offset + local_i, axis, axis=1, tiled=True)
    _, pos = _top_k_smallest(all_s, k, False)
    return all_s, jnp.take_along_axis(all_i, pos, axis=1)

  @jax.jit
  def search(queries, db_sharded, augmented):
    _, indices = local_then_merge(queries, augmented)
    return _refine(queries, db_sharded, indices)

  return lambda q: search(q, db_sharded, augmented)


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
  index = jnp.asarray(list_table(db_lists, num_lists_total))
  return Lists(index, _gather_rows(_augment_db(jnp.asarray(db, jnp.float32)),
                                   index))


@jax.jit
def _gather_rows(rows, index):
  return rows[jnp.maximum(index, 0)]


@functools.partial(jax.jit, static_argnames=("k",))
def _list_top_k(queries, vectors, index, c, k):
  """Top k of a group of queries within list c: one matrix product. The
  list is sliced inside the jitted call, so no (L_max, D) copy is made per
  call outside it."""
  list_vectors = jax.lax.dynamic_index_in_dim(vectors, c, keepdims=False)
  list_index = jax.lax.dynamic_index_in_dim(index, c, keepdims=False)
  scores = _scores(queries, list_vectors)  # (b, L_max)
  scores = jnp.where(list_index >= 0, scores, jnp.inf)
  _, pos = _top_k_smallest(scores, min(k, scores.shape[1]), False)
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
  d = _direct_distances(queries, db, candidates)
  width = min(k, d.shape[1])
  top_d, pos = _top_k_smallest(d, width, False)
  top_i = jnp.where(jnp.isfinite(top_d),
                    jnp.take_along_axis(candidates, pos, axis=1), -1)
  return (jnp.pad(top_d, ((0, 0), (0, k - width)), constant_values=jnp.inf),
          jnp.pad(top_i, ((0, 0), (0, k - width)), constant_values=-1))


@functools.partial(jax.jit, static_argnames=("k",))
def _append_rest(queries, db, db_augmented, top_i, k):
  """Fill the slots after the candidates with the rest of the database, by
  distance (a full ranking for mAP)."""
  scores = _scores(queries, db_augmented)
  taken = jnp.zeros(scores.shape, bool).at[
      jnp.arange(queries.shape[0])[:, None], jnp.maximum(top_i, 0)].max(
          top_i >= 0)
  _, rest_i = _top_k_smallest(jnp.where(taken, jnp.inf, scores), k, False)
  found = jnp.sum(top_i >= 0, axis=1, keepdims=True)
  slot = jnp.arange(k)[None, :]
  rest = jnp.take_along_axis(rest_i, jnp.clip(slot - found, 0, k - 1), axis=1)
  top_i = jnp.where(slot < found, top_i, rest)
  return _direct_distances(queries, db, top_i), top_i


def two_stage_search(queries, anchors, db, db_lists, *, num_lists: int,
                     k: int, outside: Outside = "absent",
                     method: Literal["grouped", "gathered"] = "grouped",
                     query_chunk: int = 1024,
                     lists: Optional[Lists] = None):
  """The paper's two-stage retrieval: anchors first, then those lists only.

  Stage 1 keeps the `num_lists` anchors nearest to each query; stage 2 ranks
  by L2 distance only the database items whose list id (class) is among
  them. With num_lists = C (every list) it returns the same indices as
  `exact_search` (distances equal up to float rounding).

  Args:
    queries: (Q, D). anchors: (C, D) class anchors. db: (N, D).
    db_lists: (N,) int list id of each database item in [0, C): the database
      labels, or `nearest_anchor(db, anchors)` for an unlabelled database.
    num_lists: lists kept in stage 1 (1 <= num_lists <= C).
    k: results per query.
    outside: "absent" — items outside the chosen lists are not returned
      (slots beyond the candidates hold index -1, distance inf); "append" —
      they follow the candidates, by distance (as a full ranking needs; this
      costs a full exact pass).
    method: "grouped" — one matrix product per list for the queries that
      chose it (fast; the host loops over lists); "gathered" — every
      candidate vector gathered per query (pure jit, memory-bound, memory
      O(query_chunk * num_lists * L_max * D)).
    query_chunk: queries per step.
    lists: `build_lists(db, db_lists, C)`, to reuse across calls.

  Returns:
    (distances, indices), each (Q, k).
  """
  anchors = jnp.asarray(anchors, jnp.float32)
  num_classes = anchors.shape[0]
  if not 1 <= num_lists <= num_classes:
    raise ValueError(f"num_lists must be in [1, {num_classes}], got"
                     f" {num_lists}")
  if outside not in ("absent", "append"):
    raise ValueError(f"outside must be 'absent' or 'append', got {outside!r}")
  if method not in ("grouped", "gathered"):
    raise ValueError(f"method must be 'grouped' or 'gathered', got"
                     f" {method!r}")
  queries = jnp.asarray(queries, jnp.float32)
  db = jnp.asarray(db, jnp.float32)
  if lists is None:
    if db_lists is None:
      raise ValueError("two_stage_search needs db_lists (or prebuilt lists)")
    lists = build_lists(db, db_lists, num_classes)
  db_augmented = _augment_db(db) if outside == "append" else None
  outs = []
  for start in range(0, queries.shape[0], query_chunk):
    chunk = queries[start:start + query_chunk]
    _, chosen = nearest_lists(chunk, anchors, num_lists)
    if method == "grouped":
      candidates = _stage_two_grouped(chunk, chosen, lists, k)
    else:
      candidates = _stage_two_gathered(chunk, chosen, lists.index)
    top_d, top_i = _best_k(chunk, db, candidates, k)
    if outside == "append":
      top_d, top_i = _append_rest(chunk, db, db_augmented, top_i, k)
    outs.append((top_d, top_i))
  return (jnp.concatenate([o[0] for o in outs]),
          jnp.concatenate([o[1] for o in outs]))


@functools.partial(jax.jit, static_argnames=("num_lists",))
def nearest_lists(queries, anchors, num_lists: int):
  """Stage 1: (squared distances, anchor ids), each (Q, num_lists), of the
  anchors nearest to each query, nearest first."""
  return _top_k_smallest(pairwise_squared_distances(queries, anchors),
                         num_lists, False)
