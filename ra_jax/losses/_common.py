"""Helpers shared by the loss modules: masks, dtypes and the reduction contract.

Contract of every loss in `ra_jax.losses`: it returns one value per example,
shape (B,), such that `loss.mean()` is the batch loss, or, with a boolean
`where` mask (B,), `loss.sum() / where.sum()` is the batch loss over the valid
examples and masked examples are exactly 0. Batch-level terms (anchor
repellers, proxy-anchor sums) are therefore copied onto every valid example.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from ra_jax.distances import compute_dtype
from ra_jax.distances import pairwise_distances
from ra_jax.distances import pairwise_squared_distances


def validity(where: Optional[jax.Array], batch_size: int) -> jax.Array:
  """The boolean mask (B,) of examples that count; all True when None."""
  if where is None:
    return jnp.ones((batch_size,), dtype=bool)
  where = jnp.asarray(where)
  if where.shape != (batch_size,):
    raise ValueError(
        f"`where` must have shape ({batch_size},) to match the batch, got"
        f" {where.shape}")
  return where.astype(bool)


def check_batch(embeddings: jax.Array, labels: jax.Array) -> None:
  """Raises a ValueError naming the argument when shapes do not fit (B, D)/(B,)."""
  if embeddings.ndim != 2:
    raise ValueError(
        f"`embeddings` must have shape (B, D), got {embeddings.shape}")
  if labels.shape != embeddings.shape[:1]:
    raise ValueError(
        f"`labels` must have shape ({embeddings.shape[0]},) to match"
        f" `embeddings` {embeddings.shape}, got {labels.shape}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"`labels` must be integers, got dtype {labels.dtype}")


def check_class_matrix(name: str, matrix: jax.Array, dim: int) -> None:
  """Checks a per-class parameter (anchors, proxies, classifier rows) is (C, D)."""
  if matrix.ndim != 2 or matrix.shape[1] != dim:
    raise ValueError(
        f"`{name}` must have shape (C, {dim}) to match the embedding"
        f" dimension, got {matrix.shape}")


def as_compute(*arrays: jax.Array) -> tuple[jax.Array, ...]:
  """Casts float arrays to a common dtype of at least float32."""
  dtype = compute_dtype(*arrays)
  return tuple(jnp.asarray(a, dtype) for a in arrays)


def pair_masks(labels: jax.Array,
               valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(positive, negative) boolean (B, B) masks over valid pairs i != j."""
  same = labels[:, None] == labels[None, :]
  both_valid = valid[:, None] & valid[None, :]
  not_self = ~jnp.eye(labels.shape[0], dtype=bool)
  return same & both_valid & not_self, ~same & both_valid


def masked_mean(values: jax.Array, mask: jax.Array, axis: int) -> jax.Array:
  """Mean of `values` over `mask` along `axis`; 0 (not NaN) where mask is empty."""
  total = jnp.sum(jnp.where(mask, values, 0.0), axis=axis)
  count = jnp.sum(mask, axis=axis)
  return total / jnp.maximum(count, 1)


def half_squared_distance_to_class(embeddings: jax.Array, labels: jax.Array,
                                   centers: jax.Array) -> jax.Array:
  """1/2 ||e_i - c_{y_i}||^2 per example, (B,): a gather, O(B*D), no matmul."""
  return 0.5 * jnp.sum(jnp.square(embeddings - centers[labels]), axis=-1)


def prepare_batch(
    embeddings: jax.Array, labels: jax.Array, where: Optional[jax.Array]
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Validates and casts (embeddings, labels, where) -> (e, labels, valid)."""
  embeddings, labels = jnp.asarray(embeddings), jnp.asarray(labels)
  check_batch(embeddings, labels)
  valid = validity(where, embeddings.shape[0])
  (embeddings,) = as_compute(embeddings)
  return embeddings, labels, valid


def prepare_class_batch(
    embeddings: jax.Array, labels: jax.Array, matrix_name: str,
    matrix: jax.Array, where: Optional[jax.Array]
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Validates and casts (embeddings, labels, per-class matrix, where).

  Returns (embeddings, labels, matrix, valid) with floats in the compute dtype.
  """
  embeddings, labels, valid = prepare_batch(embeddings, labels, where)
  matrix = jnp.asarray(matrix)
  check_class_matrix(matrix_name, matrix, embeddings.shape[1])
  embeddings, matrix = as_compute(embeddings, matrix)
  return embeddings, labels, matrix, valid


def batch_distances(embeddings: jax.Array, squared: bool) -> jax.Array:
  """(B, B) L2 (or squared L2) distances within a batch, gradient-safe at 0."""
  if squared:
    return pairwise_squared_distances(embeddings, embeddings)
  return pairwise_distances(embeddings, embeddings)
