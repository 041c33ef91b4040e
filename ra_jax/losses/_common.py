"""Helpers shared by the loss modules: masks, dtypes and the reduction contract.

Contract of every loss in `ra_jax.losses`: it returns one value per example,
shape (B,), such that `loss.mean()` is the batch loss, or, with a boolean
`where` mask (B,), `loss.sum() / where.sum()` is the batch loss over the valid
examples and masked examples are exactly 0. Batch-level terms (anchor
repellers, proxy-anchor sums) are therefore copied onto every valid example.
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from ra_jax.distances import compute_dtype
from ra_jax.distances import pairwise_distances
from ra_jax.distances import pairwise_squared_distances


def concrete(x: Any) -> Optional[np.ndarray]:
  """`x` as a NumPy array when it holds values (an eager call), or None
  when it is traced (under jit, grad of it, vmap)."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError,
          jax.errors.ConcretizationTypeError):
    return None


def require(ok: jax.Array, message: str, *values: jax.Array,
            checks: bool = False) -> None:
  """Input validation that works eagerly and, on request, under jit.

  `ok` is a boolean scalar; `message` names the argument, with a `{}` for
  each of `values`. Eagerly (concrete inputs) a False `ok` raises a
  ValueError. Traced, with `checks=True`, it becomes a `checkify.check`
  (the caller runs the function under `jax.experimental.checkify.checkify`
  and calls `.throw()` on the error); traced without, it checks nothing.
  """
  verdict = concrete(ok)
  if verdict is not None:
    if not bool(verdict):
      shown = [concrete(v) for v in values]
      raise ValueError(message.format(*[
          "?" if v is None else v.item() if v.ndim == 0 else v
          for v in shown]))
  elif checks:
    checkify.check(ok, message, *values)


def check_hyperparameter(name: str, value: Any, *, minimum: float,
                         inclusive: bool = True) -> None:
  """A ValueError naming `name` when a given number is below `minimum`
  (or equal to it, with inclusive=False); traced values are not checked."""
  number = concrete(value)
  if number is None or number.ndim != 0:
    return
  if not (np.isfinite(number) and (number >= minimum if inclusive else
                                    number > minimum)):
    bound = f">= {minimum}" if inclusive else f"> {minimum}"
    raise ValueError(f"`{name}` must be a finite number {bound}, got"
                     f" {number.item()}")


def check_labels_in_range(labels: jax.Array, valid: jax.Array,
                          num_classes: int, checks: bool) -> None:
  """Every valid example's label is a class id in [0, num_classes)."""
  inside = (labels >= 0) & (labels < num_classes)
  low = jnp.min(jnp.where(valid, labels, 0), initial=0)
  high = jnp.max(jnp.where(valid, labels, 0), initial=0)
  require(jnp.all(inside | ~valid),
          f"`labels` must be class ids in [0, {num_classes}) (the rows of the"
          " per-class parameters); got values from {} to {}", low, high,
          checks=checks)


def check_finite(name: str, values: jax.Array, rows: Optional[jax.Array],
                 checks: bool) -> None:
  """No NaN or inf in `values` (only in the valid `rows` when given)."""
  finite = jnp.isfinite(values)
  if finite.ndim > 1:
    finite = jnp.all(finite, axis=tuple(range(1, finite.ndim)))
  if rows is not None:
    finite = finite | ~rows
  require(jnp.all(finite), f"`{name}` holds NaN or inf in {{}} row(s)",
          jnp.sum(~finite), checks=checks)


def validity(where: Optional[jax.Array], batch_size: int) -> jax.Array:
  """The boolean mask (B,) of examples that count; all True when None."""
  if where is None:
    return jnp.ones((batch_size,), dtype=bool)
  where = jnp.asarray(where)
  if where.shape != (batch_size,):
    raise ValueError(
        f"`where` must have shape ({batch_size},) to match the batch, got"
        f" {where.shape}")
  if where.dtype != bool and not jnp.issubdtype(where.dtype, jnp.integer):
    raise ValueError(f"`where` must be a boolean mask, got dtype {where.dtype}")
  return where.astype(bool)


def check_batch(embeddings: jax.Array, labels: jax.Array) -> None:
  """Raises a ValueError naming the argument when shapes do not fit (B, D)/(B,)."""
  if embeddings.ndim != 2:
    raise ValueError(
        f"`embeddings` must have shape (B, D), got {embeddings.shape}")
  if not jnp.issubdtype(embeddings.dtype, jnp.floating):
    raise ValueError(
        f"`embeddings` must be floats, got dtype {embeddings.dtype}")
  if labels.shape != embeddings.shape[:1]:
    raise ValueError(
        f"`labels` must have shape ({embeddings.shape[0]},) to match"
        f" `embeddings` {embeddings.shape}, got {labels.shape}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"`labels` must be integers, got dtype {labels.dtype}")


def check_class_matrix(name: str, matrix: jax.Array, dim: int) -> None:
  """Checks a per-class parameter (anchors, proxies, classifier rows) is
  (C, D) with C >= 1 and floats."""
  if matrix.ndim != 2 or matrix.shape[1] != dim:
    raise ValueError(
        f"`{name}` must have shape (C, {dim}) to match the embedding"
        f" dimension, got {matrix.shape}")
  if matrix.shape[0] == 0:
    raise ValueError(f"`{name}` must have at least one class (row), got"
                     f" shape {matrix.shape}")
  if not jnp.issubdtype(matrix.dtype, jnp.floating):
    raise ValueError(f"`{name}` must be floats, got dtype {matrix.dtype}")


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
    embeddings: jax.Array, labels: jax.Array, where: Optional[jax.Array],
    checks: bool = False
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Validates and casts (embeddings, labels, where) -> (e, labels, valid).

  Masked rows are replaced (embedding 0, label 0) before any arithmetic, so
  nothing they hold — NaN, inf, a label out of range — reaches a value or a
  gradient. Valid rows must be finite (see `require` for when this is
  checked).
  """
  embeddings, labels = jnp.asarray(embeddings), jnp.asarray(labels)
  check_batch(embeddings, labels)
  valid = validity(where, embeddings.shape[0])
  check_finite("embeddings", embeddings, valid, checks)
  (embeddings,) = as_compute(embeddings)
  embeddings = jnp.where(valid[:, None], embeddings, 0.0)
  labels = jnp.where(valid, labels, 0)
  return embeddings, labels, valid


def prepare_class_batch(
    embeddings: jax.Array, labels: jax.Array, matrix_name: str,
    matrix: jax.Array, where: Optional[jax.Array], checks: bool = False
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Validates and casts (embeddings, labels, per-class matrix, where):
  `prepare_batch`, a (C, D) matrix, and labels in [0, C).

  Returns (embeddings, labels, matrix, valid) with floats in the compute dtype.
  """
  embeddings, labels, valid = prepare_batch(embeddings, labels, where, checks)
  matrix = jnp.asarray(matrix)
  check_class_matrix(matrix_name, matrix, embeddings.shape[1])
  check_labels_in_range(labels, valid, matrix.shape[0], checks)
  check_finite(matrix_name, matrix, None, checks)
  embeddings, matrix = as_compute(embeddings, matrix)
  return embeddings, labels, matrix, valid


def batch_distances(embeddings: jax.Array, squared: bool) -> jax.Array:
  """(B, B) L2 (or squared L2) distances within a batch, gradient-safe at 0."""
  if squared:
    return pairwise_squared_distances(embeddings, embeddings)
  return pairwise_distances(embeddings, embeddings)
