"""The scoring kernels exact and two-stage search share.

Candidates are found with the matrix-product expansion (fast): a database
row is stored augmented as [x, ||x||^2], so one product with [-2q, 1] gives
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


def top_k_smallest(distances, k, approx=False):
  """(values, positions) of the k smallest entries of each row, smallest
  first; of equal values the lower position first."""
  if approx:  # a real speed-up on TPU only; exact elsewhere
    neg, idx = jax.lax.approx_max_k(-distances, k)
  else:
    neg, idx = jax.lax.top_k(-distances, k)
  return -neg, idx


@jax.jit
def augment_db(db):
  """[x, ||x||^2] (N, D+1): one matrix product then gives ranking scores."""
  return jnp.concatenate([db, jnp.sum(jnp.square(db), 1, keepdims=True)], 1)


def scores(queries, db_augmented):
  """||x||^2 - 2 q.x for every pair (Q, N): squared L2 minus the per-query
  constant ||q||^2, so the same ranking, from a single matrix product with no
  elementwise pass over the (Q, N) result."""
  q_augmented = jnp.concatenate(
      [-2.0 * queries, jnp.ones((queries.shape[0], 1), queries.dtype)], 1)
  return jnp.matmul(q_augmented, db_augmented.T,
                    precision=jax.lax.Precision.HIGHEST)
