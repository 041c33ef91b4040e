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
from typing import Literal, Optional

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


@functools.partial(jax.jit, static_argnames=("k", "db_chunk", "approx"))
def _exact_chunk(queries, db, k, db_chunk, approx):
  """Top k of a query chunk against the db, scanning db chunks of db_chunk."""
  num_db = db.shape[0]
  if db_chunk >= num_db:
    d = pairwise_squared_distances(queries, db)
    return _refine(queries, db, _top_k_smallest(d, k, approx)[1])
  num_chunks = -(-num_db // db_chunk)
  padded = jnp.pad(db, ((0, num_chunks * db_chunk - num_db), (0, 0)))
  blocks = padded.reshape(num_chunks, db_chunk, -1)

  def step(carry, inputs):
    best_d, best_i = carry
    block, offset = inputs
    d = pairwise_squared_distances(queries, block)
    index = offset + jnp.arange(db_chunk)
    d = jnp.where(index < num_db, d, jnp.inf)
    block_d, block_i = _top_k_smallest(d, min(k, db_chunk), approx)
    merged_d = jnp.concatenate([best_d, block_d], axis=1)
    merged_i = jnp.concatenate([best_i, offset + block_i], axis=1)
    top_d, pos = _top_k_smallest(merged_d, k, False)
    return (top_d, jnp.take_along_axis(merged_i, pos, axis=1)), None

  init = (jnp.full((queries.shape[0], k), jnp.inf, queries.dtype),
          jnp.full((queries.shape[0], k), -1, jnp.int32))
  offsets = jnp.arange(num_chunks, dtype=jnp.int32) * db_chunk
  (_, best_i), _ = jax.lax.scan(step, init, (blocks, offsets))
  return _refine(queries, db, best_i)


def exact_search(queries, db, k: int, *, query_chunk: int = 1024,
                 db_chunk: int = 1 << 16, mesh: Optional[Mesh] = None,
                 axis: str = "data", approx: bool = False):
  """Exact k nearest database items of each query (squared L2).

  Args:
    queries: (Q, D). db: (N, D). k: neighbours per query (<= N).
    query_chunk: queries per jitted call (bounds memory to
      query_chunk x db_chunk distances).
    db_chunk: database items per scan step.
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
    search = lambda q: _exact_chunk(q, db, k, db_chunk, approx)
  else:
    search = _sharded_search(db, k, mesh, axis, db_chunk, approx)
  outs = [search(queries[s:s + query_chunk])
          for s in range(0, queries.shape[0], query_chunk)]
  return (jnp.concatenate([o[0] for o in outs]),
          jnp.concatenate([o[1] for o in outs]))


def _sharded_search(db, k, mesh, axis, db_chunk, approx):
  """Local top k on each device's database shard, then a global merge."""
  devices = mesh.shape[axis]
  num_db = db.shape[0]
  shard = -(-num_db // devices)
  if shard < k:
    raise ValueError(f"each of the {devices} database shards holds {shard}"
                     f" items, fewer than k={k}")
  # Padding rows sit at +inf distance: a huge coordinate, masked below too.
  padded = jnp.pad(db, ((0, shard * devices - num_db), (0, 0)))
  db_sharded = jax.device_put(padded, NamedSharding(mesh, P(axis)))

  # Every device merges the same gathered candidates, so the result is
  # replicated; check_vma cannot infer that through top_k.
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), P(axis)),
                     out_specs=(P(), P()), check_vma=False)
  def local_then_merge(queries, local_db):
    offset = jax.lax.axis_index(axis) * shard
    d = pairwise_squared_distances(queries, local_db)
    d = jnp.where(offset + jnp.arange(shard) < num_db, d, jnp.inf)
    local_d, local_i = _top_k_smallest(d, k, approx)
    all_d = jax.lax.all_gather(local_d, axis, axis=1, tiled=True)
    all_i = jax.lax.all_gather(offset + local_i, axis, axis=1, tiled=True)
    best_d, pos = _top_k_smallest(all_d, k, False)
    return best_d, jnp.take_along_axis(all_i, pos, axis=1)

  @jax.jit
  def search(queries, db_sharded):
    _, indices = local_then_merge(queries, db_sharded)
    return _refine(queries, db_sharded, indices)

  return lambda q: search(q, db_sharded)


def list_table(db_lists, num_lists_total: Optional[int] = None) -> np.ndarray:
  """Padded per-list index table (C, L_max): row c holds the database
  indices whose list id is c, ascending, then -1 padding."""
  db_lists = np.asarray(db_lists)
  total = int(db_lists.max()) + 1 if num_lists_total is None else (
      num_lists_total)
  order = np.argsort(db_lists, kind="stable")
  counts = np.bincount(db_lists, minlength=total)
  table = np.full((total, max(1, counts.max())), -1, np.int32)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  for c in range(total):
    table[c, :counts[c]] = order[starts[c]:starts[c] + counts[c]]
  return table


@functools.partial(jax.jit, static_argnames=("num_lists", "k", "outside"))
def _two_stage_chunk(queries, anchors, db, table, num_lists, k, outside):
  # Stage 1: the num_lists nearest anchors of each query.
  _, lists = _top_k_smallest(pairwise_squared_distances(queries, anchors),
                             num_lists, False)
  # Stage 2: only the database items in those lists, by distance.
  candidates = table[lists].reshape(queries.shape[0], -1)  # (q, L * L_max)
  valid = candidates >= 0
  d = _direct_distances(queries, db, candidates)  # gathers (q, L*L_max, D)
  width = min(k, d.shape[1])
  top_d, pos = _top_k_smallest(d, width, False)
  top_i = jnp.where(jnp.isfinite(top_d),
                    jnp.take_along_axis(candidates, pos, axis=1), -1)
  if width < k:
    pad = k - width
    top_d = jnp.pad(top_d, ((0, 0), (0, pad)), constant_values=jnp.inf)
    top_i = jnp.pad(top_i, ((0, 0), (0, pad)), constant_values=-1)
  if outside == "append":  # the rest of the database, after, by distance
    rest_d = pairwise_squared_distances(queries, db)
    chosen = jnp.zeros(rest_d.shape, bool).at[
        jnp.arange(queries.shape[0])[:, None], jnp.maximum(candidates, 0)
    ].max(valid)
    rest_d, rest_i = _top_k_smallest(jnp.where(chosen, jnp.inf, rest_d), k,
                                     False)
    found = jnp.sum(top_i >= 0, axis=1, keepdims=True)
    slot = jnp.arange(k)[None, :]
    from_rest = jnp.clip(slot - found, 0, k - 1)
    top_d = jnp.where(slot < found, top_d,
                      jnp.take_along_axis(rest_d, from_rest, axis=1))
    top_i = jnp.where(slot < found, top_i,
                      jnp.take_along_axis(rest_i, from_rest, axis=1))
    top_d = _direct_distances(queries, db, top_i)
  return top_d, top_i


def two_stage_search(queries, anchors, db, db_lists, *, num_lists: int,
                     k: int, outside: Outside = "absent",
                     query_chunk: int = 256, table=None):
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
      they follow the candidates, by distance (as a full ranking needs).
    query_chunk: queries per jitted call; memory is
      O(query_chunk * num_lists * L_max * D) for the gathered candidates.
    table: a precomputed `list_table(db_lists, C)` to reuse across calls.

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
  db_lists = np.asarray(db_lists)
  if db_lists.min() < 0 or db_lists.max() >= num_classes:
    raise ValueError(f"db_lists must hold list ids in [0, {num_classes}),"
                     f" got values in [{db_lists.min()}, {db_lists.max()}]")
  table = jnp.asarray(list_table(db_lists, num_classes) if table is None
                      else table)
  queries = jnp.asarray(queries, jnp.float32)
  db = jnp.asarray(db, jnp.float32)
  outs = [_two_stage_chunk(queries[s:s + query_chunk], anchors, db, table,
                           num_lists, k, outside)
          for s in range(0, queries.shape[0], query_chunk)]
  return (jnp.concatenate([o[0] for o in outs]),
          jnp.concatenate([o[1] for o in outs]))
