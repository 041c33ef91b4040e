"""Euclidean geometry shared by the losses and the retrieval code.

Plain jax.numpy (no Flax), so `ra_jax.losses` and `ra_jax.retrieval` can be
lifted into other code. Every function here has a finite gradient everywhere,
including at zero distance, where d||x||/dx is undefined and we use 0.
"""

import functools

import jax
import jax.numpy as jnp


def compute_dtype(*arrays: jax.Array) -> jnp.dtype:
  """The float dtype to compute in: at least float32 (bf16/f16 are upcast)."""
  return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def safe_sqrt(x: jax.Array) -> jax.Array:
  """sqrt(x) for x >= 0 whose gradient at 0 is 0 instead of inf/NaN. NaN
  stays NaN (in the value and the gradient), so broken inputs show."""
  positive = x > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)),
                   jnp.where(jnp.isnan(x), x, 0.0))


def safe_norm(x: jax.Array, axis: int = -1) -> jax.Array:
  """||x||_2 along `axis`, with a zero (not NaN) gradient at x = 0."""
  return safe_sqrt(jnp.sum(jnp.square(x), axis=axis))


def pairwise_squared_distances(
    x: jax.Array,
    y: jax.Array,
    precision: jax.lax.PrecisionLike = jax.lax.Precision.HIGHEST,
) -> jax.Array:
  """||x_i - y_j||^2 for x (N, D), y (M, D) -> (N, M).

  Uses ||x||^2 + ||y||^2 - 2 x.y^T, so the cost is one (N, D) x (D, M) matrix
  product and memory is O(N*M), not O(N*M*D). Rounding can make the expansion
  slightly negative for (near-)coincident points; it is clamped at 0.
  `precision` defaults to HIGHEST because the expansion cancels
  catastrophically with bf16 matrix passes (the TPU default).
  """
  xx = jnp.sum(jnp.square(x), axis=-1)[:, None]
  yy = jnp.sum(jnp.square(y), axis=-1)[None, :]
  xy = jnp.matmul(x, y.T, precision=precision)
  return jnp.maximum(xx + yy - 2.0 * xy, 0.0)


def pairwise_distances(x: jax.Array, y: jax.Array) -> jax.Array:
  """||x_i - y_j||_2 for x (N, D), y (M, D) -> (N, M), gradient-safe at 0."""
  return safe_sqrt(pairwise_squared_distances(x, y))


def cosine_similarity_matrix(x: jax.Array, y: jax.Array) -> jax.Array:
  """cos(x_i, y_j) for x (N, D), y (M, D) -> (N, M); 0 for zero vectors."""
  x_unit = x / jnp.maximum(safe_norm(x), 1e-12)[:, None]
  y_unit = y / jnp.maximum(safe_norm(y), 1e-12)[:, None]
  return x_unit @ y_unit.T


@functools.partial(jax.jit, static_argnames=("k",))
def nearest(x: jax.Array, y: jax.Array, k: int = 1
            ) -> tuple[jax.Array, jax.Array]:
  """The k rows of y (M, D) nearest in L2 to each row of x (N, D).

  Returns (squared distances, indices), each (N, k), nearest first; of equally
  near rows the lower index comes first. Computed in at least float32. The
  nearest class anchor of an embedding, and stage 1 of two-stage search.
  """
  dtype = compute_dtype(x, y)
  x, y = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
  if not 1 <= k <= y.shape[0]:
    raise ValueError(f"k must be in [1, {y.shape[0]}] (the rows of y), got"
                     f" {k}")
  negated, indices = jax.lax.top_k(-pairwise_squared_distances(x, y), k)
  return -negated, indices
