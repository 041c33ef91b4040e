"""The scoring kernels exact and two-stage search share.

Candidates are found with the matrix-product expansion (fast): with the
database's squared norms kept beside it, one product gives
||x||^2 - 2 q.x, the squared distance less the per-query constant ||q||^2.
The distances returned are then recomputed from the differences (exact, no
cancellation) and the results re-sorted by them (`refine`).
"""

import jax
import jax.numpy as jnp


def direct_distances(queries, db, indices):
  """||q - db[i]||^2 for indices (q, k) computed from the differences (no
  matrix-product expansion, so no cancellation); inf where index is -1."""
  vectors = db[jnp.maximum(indices, 0)]
  d = jnp.sum(jnp.square(vectors - queries[:, None, :]), axis=-1)
  return jnp.where(indices >= 0, d, jnp.inf)


def refine(queries, db, indices):
  """Exact distances of the found items, re-sorted (stable) by them."""
  d = direct_distances(queries, db, indices)
  order = jnp.argsort(d, axis=1, stable=True)
  return (jnp.take_along_axis(d, order, axis=1),
          jnp.take_along_axis(indices, order, axis=1))


_BLOCK = 32  # columns per block of `_blocked_top_k_smallest`


def top_k_smallest(distances, k, approx=False):
  """(values, positions) of the k smallest entries of each row, smallest
  first; of equal values the lower position first."""
  if approx:  # a real speed-up on TPU only; exact elsewhere
    neg, idx = jax.lax.approx_max_k(-distances, k)
    return -neg, idx
  if distances.shape[-1] >= 4 * k * _BLOCK:
    return _blocked_top_k_smallest(distances, k)
  neg, idx = jax.lax.top_k(-distances, k)
  return -neg, idx


def _blocked_top_k_smallest(distances, k):
  """`top_k_smallest` of a long row, selecting over far fewer entries.

  Cut each row into blocks of `_BLOCK`; the k blocks with the smallest
  minima (ties: lower block first) hold the row's k smallest entries: those
  k minima are k entries no larger than the k-th smallest minimum t, so
  every entry among the k smallest is <= t and lies in a block whose
  minimum is <= t — a chosen block, or (minimum exactly t) a later block
  whose entries all follow the chosen blocks' minima in (value, position)
  order. So the result equals `lax.top_k`'s, ties included. Measured on
  this CPU (k = 100): 12x faster over 128 x 10^6, 2.6x over 16 x 10^5."""
  rows, width = distances.shape
  blocks = -(-width // _BLOCK)
  padded = jnp.pad(distances, ((0, 0), (0, blocks * _BLOCK - width)),
                   constant_values=jnp.inf).reshape(rows, blocks, _BLOCK)
  _, chosen = jax.lax.top_k(-jnp.min(padded, axis=2), k)
  chosen = jnp.sort(chosen, axis=1)  # candidates in position order (ties)
  candidates = jnp.take_along_axis(padded, chosen[:, :, None], axis=1)
  positions = chosen[:, :, None] * _BLOCK + jnp.arange(_BLOCK)
  neg, pick = jax.lax.top_k(-candidates.reshape(rows, k * _BLOCK), k)
  return -neg, jnp.take_along_axis(positions.reshape(rows, -1), pick, axis=1)


def scores(queries, db, db_norms):
  """||x||^2 - 2 q.x for every pair (Q, N): squared L2 minus the per-query
  constant ||q||^2, so the same ranking. Written as one matrix product plus
  the norms so that XLA fuses the addition into the product (measured on
  CPU: no slower than the product alone; `norms - 2 q.x` is ~1.6x slower)."""
  return jnp.matmul(-2.0 * queries, db.T,
                    precision=jax.lax.Precision.HIGHEST) + db_norms[None, :]


@jax.jit
def row_norms(vectors):
  """||row||^2 of each row, (N,)."""
  return jnp.sum(jnp.square(vectors), axis=1)
