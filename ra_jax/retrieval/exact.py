"""Exact nearest-neighbour search on device (squared L2), optionally with the
database sharded over a mesh.

Results are (distances, indices), each (Q, k), nearest first. Everything is
jit-compiled and vectorised over a chunk of queries; see `scoring` for how
candidates are scored and their distances made exact.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ra_jax.retrieval import scoring


@functools.partial(jax.jit, static_argnames=("k", "db_chunk", "approx"))
def _exact_chunk(queries, db, norms, k, db_chunk, approx):
  """Top k of a query chunk against the db, scanning db chunks of db_chunk
  (sliced in place: no padded copy of the database)."""
  num_db = db.shape[0]
  if db_chunk >= num_db:
    scores = scoring.scores(queries, db, norms)
    return scoring.refine(queries, db, scoring.top_k_smallest(scores, k, approx)[1])
  num_chunks = -(-num_db // db_chunk)

  def step(carry, offset):
    best_s, best_i = carry
    # The last block is moved back to end at N; rows it shares with the
    # block before are masked, so each row is counted once.
    first = jnp.minimum(offset, num_db - db_chunk)
    block = jax.lax.dynamic_slice_in_dim(db, first, db_chunk)
    block_norms = jax.lax.dynamic_slice_in_dim(norms, first, db_chunk)
    scores = scoring.scores(queries, block, block_norms)
    index = first + jnp.arange(db_chunk)
    scores = jnp.where(index >= offset, scores, jnp.inf)
    block_s, block_i = scoring.top_k_smallest(scores, min(k, db_chunk), approx)
    merged_s = jnp.concatenate([best_s, block_s], axis=1)
    merged_i = jnp.concatenate([best_i, first + block_i], axis=1)
    top_s, pos = scoring.top_k_smallest(merged_s, k, False)
    return (top_s, jnp.take_along_axis(merged_i, pos, axis=1)), None

  init = (jnp.full((queries.shape[0], k), jnp.inf, queries.dtype),
          jnp.full((queries.shape[0], k), -1, jnp.int32))
  offsets = jnp.arange(num_chunks, dtype=jnp.int32) * db_chunk
  (_, best_i), _ = jax.lax.scan(step, init, offsets)
  return scoring.refine(queries, db, best_i)


def exact_search(queries, db, k: int, *, norms=None, query_chunk: int = 128,
                 db_chunk: int = 1 << 20, mesh: Optional[Mesh] = None,
                 axis: str = "data", approx: bool = False):
  """Exact k nearest database items of each query (squared L2).

  Args:
    queries: (Q, D). db: (N, D). k: neighbours per query (<= N).
    norms: (N,) the rows' squared norms, when kept with the database
      (computed otherwise).
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
  if db.ndim != 2 or queries.ndim != 2 or queries.shape[1] != db.shape[1]:
    raise ValueError(f"queries (Q, D) and db (N, D) must share D, got"
                     f" {queries.shape} and {db.shape}")
  if not 0 < k <= db.shape[0]:
    raise ValueError(f"k must be in [1, {db.shape[0]}], got {k}")
  norms = (scoring.row_norms(db) if norms is None else
           jnp.asarray(norms, jnp.float32))
  if norms.shape != db.shape[:1]:
    raise ValueError(f"norms must be ({db.shape[0]},), got {norms.shape}")
  if mesh is None:
    chunk = min(db_chunk, db.shape[0])
    search = lambda q: _exact_chunk(q, db, norms, k, chunk, approx)
  else:
    search = _sharded_search(db, norms, k, mesh, axis, approx)
  outs = [search(queries[s:s + query_chunk])
          for s in range(0, queries.shape[0], query_chunk)]
  return (jnp.concatenate([o[0] for o in outs]),
          jnp.concatenate([o[1] for o in outs]))


def _sharded_search(db, norms, k, mesh, axis, approx):
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
  norms_sharded = jax.device_put(jnp.pad(norms, (0, shard * devices - num_db)),
                                 sharding)

  # Every device merges the same gathered candidates, so the result is
  # replicated; check_vma cannot infer that through top_k.
  @functools.partial(jax.shard_map, mesh=mesh,
                     in_specs=(P(), P(axis), P(axis)), out_specs=(P(), P()),
                     check_vma=False)
  def local_then_merge(queries, local_db, local_norms):
    offset = jax.lax.axis_index(axis) * shard
    scores = scoring.scores(queries, local_db, local_norms)
    scores = jnp.where(offset + jnp.arange(shard) < num_db, scores, jnp.inf)
    local_s, local_i = scoring.top_k_smallest(scores, k, approx)
    all_s = jax.lax.all_gather(local_s, axis, axis=1, tiled=True)
    all_i = jax.lax.all_gather(offset + local_i, axis, axis=1, tiled=True)
    _, pos = scoring.top_k_smallest(all_s, k, False)
    return all_s, jnp.take_along_axis(all_i, pos, axis=1)

  @jax.jit
  def search(queries, db_sharded, norms_sharded):
    _, indices = local_then_merge(queries, db_sharded, norms_sharded)
    return scoring.refine(queries, db_sharded, indices)

  return lambda q: search(q, db_sharded, norms_sharded)
