"""The repeller of the class anchor margin loss, computed on half the pairs.

  R = 1/2 sum_{y != y'} max(0, 2m - ||c_y - c_y'||)^2 = sum_{y < y'} h_{yy'}^2

Its cost, O(C^2 * D), dominates the loss once C exceeds the batch size, so its
derivative is written by hand (a custom JVP, which reverse mode transposes)
rather than left to autodiff:
- forward: the pairwise distances are symmetric, so the anchors are cut into
  K row blocks and block i is multiplied only with anchors from its own start
  onwards: one (C/K, D) x (D, C - start) product per block, about (K+1)/2K of
  the full (C, C) product;
- derivative: a block contributes to the gradient only where some pair is closer
  than 2m. Separated anchors, the usual state after the first steps of
  training, make every block's contribution zero, and `lax.cond` skips its
  matrix products. An active block's distances are recomputed rather than
  kept from the forward pass (no O(C^2) residual memory), so with every pair
  too close (collapsed anchors, a transient state) the backward costs about
  1.5x autodiff's. docs/benchmarks.md has both regimes measured.
"""

import math

import jax
import jax.numpy as jnp

from ra_jax.distances import safe_sqrt

# At most this many row blocks: 8 computes 56% of the full (C, C) product and
# keeps the unrolled program small.
_MAX_BLOCKS = 8
_MIN_BLOCK = 128


def _block_size(num_classes: int) -> int:
  if num_classes <= 2 * _MIN_BLOCK:
    return num_classes
  return max(_MIN_BLOCK, math.ceil(num_classes / _MAX_BLOCKS))


def _row_blocks(num_classes: int) -> list[tuple[int, int]]:
  """(start, size) of the row blocks; row block i pairs with columns start:."""
  size = _block_size(num_classes)
  return [(start, min(size, num_classes - start))
          for start in range(0, num_classes, size)]


def _row_block_hinge(anchors, sq_norms, start, size, margin):
  """Distances and hinges max(0, 2m - d) of rows start:start+size against
  columns start: (each unordered pair once: strictly right of the diagonal).

  Returns (squared distances with inf off the pairs, hinges, distances), each
  (size, C - start).
  """
  rows, cols = anchors[start:start + size], anchors[start:]
  gram = jnp.matmul(rows, cols.T, precision=jax.lax.Precision.HIGHEST)
  sq = jnp.maximum(
      sq_norms[start:start + size, None] + sq_norms[None, start:] - 2.0 * gram,
      0.0)
  distance = safe_sqrt(sq)
  pair = jnp.arange(cols.shape[0])[None, :] > jnp.arange(size)[:, None]
  hinge = jnp.where(pair, jnp.maximum(2.0 * margin - distance, 0.0), 0.0)
  return jnp.where(pair, sq, jnp.inf), hinge, distance


def _forward(anchors, margin):
  """(R, min distance, per-row-block 'some pair too close' flags, sum of h)."""
  sq_norms = jnp.sum(jnp.square(anchors), axis=-1)
  repel = jnp.zeros((), anchors.dtype)
  hinge_sum = jnp.zeros((), anchors.dtype)
  min_sq = jnp.array(jnp.inf, anchors.dtype)
  active = []
  for start, size in _row_blocks(anchors.shape[0]):
    sq, hinge, _ = _row_block_hinge(anchors, sq_norms, start, size, margin)
    repel = repel + jnp.sum(jnp.square(hinge))
    hinge_sum = hinge_sum + jnp.sum(hinge)
    min_sq = jnp.minimum(min_sq, jnp.min(sq))
    active.append(jnp.any(hinge > 0))
  # A non-finite anchor has no distance that is < 2m, so the hinges would
  # hide it: say so in the values instead.
  broken = ~jnp.all(jnp.isfinite(anchors))
  repel = jnp.where(broken, jnp.nan, repel)
  min_distance = jnp.where(broken, jnp.nan, jnp.sqrt(min_sq))
  return repel, min_distance, jnp.stack(active), hinge_sum


@jax.custom_jvp
def anchor_repulsion(anchors: jax.Array,
                     margin: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(R, min_{y != y'} ||c_y - c_y'||) for anchors (C, D); see module doc.

  The minimum distance (inf for C = 1) is for logging and has no gradient.
  Differentiable in both modes (grad, jvp, jacfwd, hessian): the JVP rule
  is <dR/dc, t> with dR/dc from the blocked gradient below, which reverse
  mode transposes.
  """
  repel, min_distance, _, _ = _forward(anchors, margin)
  return repel, min_distance


def _repulsion_grad(anchors, active, margin):
  """dR/dc (C, D), visiting only the row blocks flagged active."""
  sq_norms = jnp.sum(jnp.square(anchors), axis=-1)
  hi = jax.lax.Precision.HIGHEST
  grad = jnp.zeros_like(anchors)
  # dR/dc_a = sum_b w_ab (c_b - c_a), w = 2h/d, over both orders of a pair.
  # A block's distances are recomputed here rather than kept from the
  # forward pass, so separated anchors cost no memory either.
  for k, (start, size) in enumerate(_row_blocks(anchors.shape[0])):

    def block_grad(start=start, size=size):
      _, hinge, distance = _row_block_hinge(anchors, sq_norms, start, size,
                                            margin)
      # At d = 0 the direction is undefined; its gradient is taken as 0.
      w = jnp.where(distance > 0,
                    2.0 * hinge / jnp.where(distance > 0, distance, 1.0), 0.0)
      rows, cols = anchors[start:start + size], anchors[start:]
      grad_cols = (jnp.matmul(w.T, rows, precision=hi) -
                   jnp.sum(w, axis=0)[:, None] * cols)
      grad_rows = (jnp.matmul(w, cols, precision=hi) -
                   jnp.sum(w, axis=1)[:, None] * rows)
      return grad_cols.at[:size].add(grad_rows)

    contribution = jax.lax.cond(
        active[k], block_grad,
        lambda start=start: jnp.zeros_like(anchors[start:]))
    grad = grad.at[start:].add(contribution)
  return grad


@anchor_repulsion.defjvp
def _jvp(primals, tangents):
  anchors, margin = primals
  t_anchors, t_margin = tangents
  repel, min_distance, active, hinge_sum = _forward(anchors, margin)
  # Separated anchors (the usual state during training): no work at all.
  grad = jax.lax.cond(jnp.any(active),
                      lambda: _repulsion_grad(anchors, active, margin),
                      lambda: jnp.zeros_like(anchors))
  t_repel = jnp.sum(grad * t_anchors) + 4.0 * hinge_sum * t_margin  # dR/dm
  return (repel, min_distance), (t_repel, jnp.zeros_like(min_distance))
