"""The repeller of the class anchor margin loss, computed on half the pairs.

  R = 1/2 sum_{y != y'} max(0, 2m - ||c_y - c_y'||)^2 = sum_{y < y'} h_{yy'}^2

Its cost, O(C^2 * D), dominates the loss once C exceeds the batch size, so it
is written by hand rather than left to autodiff:
- forward: the pairwise distances are symmetric, so only the blocks on and
  above the diagonal of the (C, C) distance matrix are computed (about
  (K+1)/2K of the matrix products for K blocks);
- backward: a block contributes to the gradient only where some pair is closer
  than 2m. Separated anchors, the usual state after the first steps of
  training, make every block's contribution zero, and `lax.cond` skips its
  matrix products. With every pair too close, the backward costs the same as
  autodiff's.
"""

import functools
import math

import jax
import jax.numpy as jnp

from ra_jax.distances import safe_sqrt

# At most this many blocks per side: 8 gives 36 block products on or above the
# diagonal (56% of the full matrix) and keeps the unrolled program small.
_MAX_BLOCKS = 8
_MIN_BLOCK = 128


def _block_size(num_classes: int) -> int:
  if num_classes <= 2 * _MIN_BLOCK:
    return num_classes
  return max(_MIN_BLOCK, math.ceil(num_classes / _MAX_BLOCKS))


def _pair_blocks(num_classes: int):
  """(i, j, start_i, start_j, size_i, size_j) for the blocks with i <= j."""
  size = _block_size(num_classes)
  starts = list(range(0, num_classes, size))
  for i, si in enumerate(starts):
    for j in range(i, len(starts)):
      sj = starts[j]
      yield i, j, si, sj, min(size, num_classes - si), min(size,
                                                          num_classes - sj)


def _block_hinge(anchors, sq_norms, block, margin):
  """(squared distances, hinge max(0, 2m - d), distances) of one block.

  On a diagonal block only pairs strictly above the diagonal count (each
  unordered pair once); the others get hinge 0 and squared distance inf.
  """
  i, j, si, sj, ni, nj = block
  a, b = anchors[si:si + ni], anchors[sj:sj + nj]
  gram = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
  sq = jnp.maximum(
      sq_norms[si:si + ni, None] + sq_norms[None, sj:sj + nj] - 2.0 * gram,
      0.0)
  distance = safe_sqrt(sq)
  hinge = jnp.maximum(2.0 * margin - distance, 0.0)
  if i == j:
    pair = jnp.triu(jnp.ones((ni, nj), bool), k=1)
    sq = jnp.where(pair, sq, jnp.inf)
    hinge = jnp.where(pair, hinge, 0.0)
  return sq, hinge, distance


def _forward(anchors, margin):
  """(R, min distance, per-block 'some pair too close' flags, sum of hinges)."""
  sq_norms = jnp.sum(jnp.square(anchors), axis=-1)
  repel = jnp.zeros((), anchors.dtype)
  hinge_sum = jnp.zeros((), anchors.dtype)
  min_sq = jnp.array(jnp.inf, anchors.dtype)
  active = []
  for block in _pair_blocks(anchors.shape[0]):
    sq, hinge, _ = _block_hinge(anchors, sq_norms, block, margin)
    repel = repel + jnp.sum(jnp.square(hinge))
    hinge_sum = hinge_sum + jnp.sum(hinge)
    min_sq = jnp.minimum(min_sq, jnp.min(sq))
    active.append(jnp.any(hinge > 0))
  return repel, jnp.sqrt(min_sq), jnp.stack(active), hinge_sum


@jax.custom_vjp
def anchor_repulsion(anchors: jax.Array,
                     margin: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(R, min_{y != y'} ||c_y - c_y'||) for anchors (C, D); see module doc.

  The minimum distance (inf for C = 1) is for logging and has no gradient.
  """
  repel, min_distance, _, _ = _forward(anchors, margin)
  return repel, min_distance


def _fwd(anchors, margin):
  repel, min_distance, active, hinge_sum = _forward(anchors, margin)
  return (repel, min_distance), (anchors, active, hinge_sum, margin)


def _repulsion_grad(anchors, active, margin):
  """dR/dc (C, D), visiting only the blocks flagged active."""
  sq_norms = jnp.sum(jnp.square(anchors), axis=-1)
  blocks = list(_pair_blocks(anchors.shape[0]))
  starts = sorted({b[2] for b in blocks})
  parts = {start: [] for start in starts}  # gradient pieces per row block
  hi = jax.lax.Precision.HIGHEST
  # dR/dc_a = sum_b w_ab (c_b - c_a), w = 2h/d, over both orders of a pair.
  # The block's distances are recomputed here rather than kept from the
  # forward pass, so separated anchors cost no memory either.
  for k, block in enumerate(blocks):
    _, _, si, sj, ni, nj = block

    def block_grads(block=block, si=si, sj=sj, ni=ni, nj=nj):
      _, hinge, distance = _block_hinge(anchors, sq_norms, block, margin)
      # At d = 0 the direction is undefined; its gradient is taken as 0.
      w = jnp.where(distance > 0,
                    2.0 * hinge / jnp.where(distance > 0, distance, 1.0), 0.0)
      a, b = anchors[si:si + ni], anchors[sj:sj + nj]
      return (jnp.matmul(w, b, precision=hi) - jnp.sum(w, axis=1)[:, None] * a,
              jnp.matmul(w.T, a, precision=hi) - jnp.sum(w, axis=0)[:, None] *
              b)

    def no_grads(ni=ni, nj=nj):
      return (jnp.zeros((ni, anchors.shape[1]), anchors.dtype),
              jnp.zeros((nj, anchors.shape[1]), anchors.dtype))

    grad_a, grad_b = jax.lax.cond(active[k], block_grads, no_grads)
    parts[si].append(grad_a)
    parts[sj].append(grad_b)
  return jnp.concatenate([sum(parts[start]) for start in starts], axis=0)


def _bwd(residuals, cotangents):
  anchors, active, hinge_sum, margin = residuals
  g_repel, _ = cotangents
  # Separated anchors (the usual state during training): no work at all.
  grad = jax.lax.cond(jnp.any(active),
                      lambda: _repulsion_grad(anchors, active, margin),
                      lambda: jnp.zeros_like(anchors))
  g_margin = 4.0 * hinge_sum * g_repel  # dR/dm = sum_{y<y'} 2h * 2
  return grad * g_repel, jnp.asarray(g_margin, jnp.result_type(margin))


anchor_repulsion.defvjp(_fwd, _bwd)
