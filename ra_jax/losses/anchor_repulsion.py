"""The repeller of the class anchor margin loss over every pair, in tiles.

  R = 1/2 sum_{y != y'} max(0, 2m - ||c_y - c_y'||)^2 = sum_{y < y'} h_{yy'}^2

Its cost, O(C^2 * D), dominates the loss once C exceeds the batch size, so it
is computed in square tiles of the (C, C) distance matrix, and its
derivative is written by hand (a custom JVP, which reverse mode transposes)
rather than left to autodiff:
- forward: the distances are symmetric, so only the tiles on and above the
  diagonal are computed (about half the full product), one at a time in a
  loop: memory O(T^2) for T x T tiles (T <= 512: 1 MB of float32 per
  matrix), whatever C;
- derivative: a tile contributes to the gradient only where some pair is
  closer than 2m. Separated anchors, the usual state after the first steps
  of training, make every tile's contribution zero, and `lax.cond` skips its
  matrix products. An active tile's distances are recomputed rather than
  kept from the forward pass (no O(C^2) residual memory), so with every pair
  too close (collapsed anchors, a transient state) the backward costs about
  1.5x autodiff's. docs/benchmarks.md has both regimes measured.
For many classes the neighbour list (`neighbor_repulsion`) avoids the
O(C^2) forward as well.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from ra_jax.distances import safe_sqrt

# The repeller's largest tile side: of 256, 512, 1024 and 2048, 512 was the
# fastest or within 10 % of it from C = 1,000 to 30,000 on the CPU box
# (docs/benchmarks.md); the loop's per-tile cost is small beside a tile's.
_MAX_TILE = 512


def tiling(num_classes: int, max_tile: int | None = None
           ) -> tuple[int, np.ndarray]:
  """(tile side T, (N, 2) int32 tile coordinates (i <= j)) of the pair
  matrix: T splits C evenly into ceil(C / max_tile) parts (less padding
  than a fixed side); max_tile defaults to the repeller's."""
  max_tile = _MAX_TILE if max_tile is None else max_tile
  parts = max(1, math.ceil(num_classes / max_tile))
  side = math.ceil(num_classes / parts)
  i, j = np.triu_indices(parts)
  return side, np.stack([i, j], axis=1).astype(np.int32)


def padded_anchors(anchors: jax.Array, side: int, tiles: np.ndarray
                   ) -> tuple[jax.Array, jax.Array]:
  """(anchors padded with zero rows to whole tiles, their squared norms)."""
  parts = int(tiles.max()) + 1
  padded = jnp.pad(anchors, ((0, parts * side - anchors.shape[0]), (0, 0)))
  return padded, jnp.sum(jnp.square(padded), axis=-1)


def tile_squared_distances(padded, sq_norms, num_classes: int, side: int,
                           tile) -> tuple[jax.Array, ...]:
  """Tile (i, j) of the pair matrix: (squared distances ||a - b||^2, inf
  off the pairs a < b < C; rows; columns; their squared norms), the
  distances from the Gram expansion |a|^2 + |b|^2 - 2ab, clamped at 0."""
  row_start, col_start = tile[0] * side, tile[1] * side
  rows = jax.lax.dynamic_slice_in_dim(padded, row_start, side)
  cols = jax.lax.dynamic_slice_in_dim(padded, col_start, side)
  row_sq = jax.lax.dynamic_slice_in_dim(sq_norms, row_start, side)
  col_sq = jax.lax.dynamic_slice_in_dim(sq_norms, col_start, side)
  gram = jnp.matmul(rows, cols.T, precision=jax.lax.Precision.HIGHEST)
  sq = jnp.maximum(row_sq[:, None] + col_sq[None, :] - 2.0 * gram, 0.0)
  a = row_start + jnp.arange(side)
  b = col_start + jnp.arange(side)
  pair = (a[:, None] < b[None, :]) & (b[None, :] < num_classes)
  return jnp.where(pair, sq, jnp.inf), rows, cols, row_sq, col_sq


def _tile_hinge(padded, sq_norms, num_classes, side, tile, margin):
  """(squared distances, inf off the pairs; hinges max(0, 2m - d), 0 off
  the pairs; distances; rows; columns) of one tile."""
  sq, rows, cols, _, _ = tile_squared_distances(padded, sq_norms,
                                                num_classes, side, tile)
  distance = safe_sqrt(jnp.where(jnp.isinf(sq), 0.0, sq))
  hinge = jnp.where(jnp.isinf(sq), 0.0,
                    jnp.maximum(2.0 * margin - distance, 0.0))
  return sq, hinge, distance, rows, cols


def _forward(anchors, margin):
  """(R, min distance, per-tile 'some pair too close' flags, sum of h)."""
  num_classes = anchors.shape[0]
  side, tiles = tiling(num_classes)
  padded, sq_norms = padded_anchors(anchors, side, tiles)
  tiles = jnp.asarray(tiles)

  def tile(k, carry):
    repel, hinge_sum, min_sq, active = carry
    sq, hinge, _, _, _ = _tile_hinge(padded, sq_norms, num_classes, side,
                                     tiles[k], margin)
    return (repel + jnp.sum(jnp.square(hinge)), hinge_sum + jnp.sum(hinge),
            jnp.minimum(min_sq, jnp.min(sq)),
            active.at[k].set(jnp.any(hinge > 0)))

  zero = jnp.zeros((), anchors.dtype)
  repel, hinge_sum, min_sq, active = jax.lax.fori_loop(
      0, len(tiles), tile,
      (zero, zero, jnp.array(jnp.inf, anchors.dtype),
       jnp.zeros(len(tiles), bool)))
  # A non-finite anchor has no distance that is < 2m, so the hinges would
  # hide it: say so in the values instead.
  broken = ~jnp.all(jnp.isfinite(anchors))
  repel = jnp.where(broken, jnp.nan, repel)
  min_distance = jnp.where(broken, jnp.nan, jnp.sqrt(min_sq))
  return repel, min_distance, active, hinge_sum


@jax.custom_jvp
def anchor_repulsion(anchors: jax.Array,
                     margin: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(R, min_{y != y'} ||c_y - c_y'||) for anchors (C, D); see module doc.

  The minimum distance (inf for C = 1) is for logging and has no gradient.
  Differentiable in both modes (grad, jvp, jacfwd, hessian): the JVP rule
  is <dR/dc, t> with dR/dc from the tiled gradient below, which reverse
  mode transposes.
  """
  repel, min_distance, _, _ = _forward(anchors, margin)
  return repel, min_distance


def _repulsion_grad(anchors, active, margin):
  """dR/dc (C, D), visiting only the tiles flagged active."""
  num_classes = anchors.shape[0]
  side, tiles = tiling(num_classes)
  padded, sq_norms = padded_anchors(anchors, side, tiles)
  tiles = jnp.asarray(tiles)
  hi = jax.lax.Precision.HIGHEST

  # dR/dc_a = sum_b w_ab (c_b - c_a), w = 2h/d, over both orders of a pair.
  # A tile's distances are recomputed here rather than kept from the
  # forward pass, so separated anchors cost no memory either.
  def tile_grad(k, grad):
    _, hinge, distance, rows, cols = _tile_hinge(
        padded, sq_norms, num_classes, side, tiles[k], margin)
    # At d = 0 the direction is undefined; its gradient is taken as 0.
    w = jnp.where(distance > 0,
                  2.0 * hinge / jnp.where(distance > 0, distance, 1.0), 0.0)
    grad_rows = (jnp.matmul(w, cols, precision=hi) -
                 jnp.sum(w, axis=1)[:, None] * rows)
    grad_cols = (jnp.matmul(w.T, rows, precision=hi) -
                 jnp.sum(w, axis=0)[:, None] * cols)
    for start, part in ((tiles[k, 0] * side, grad_rows),
                        (tiles[k, 1] * side, grad_cols)):
      grad = jax.lax.dynamic_update_slice_in_dim(
          grad, jax.lax.dynamic_slice_in_dim(grad, start, side) + part,
          start, axis=0)
    return grad

  grad = jax.lax.fori_loop(
      0, len(tiles),
      lambda k, grad: jax.lax.cond(active[k], tile_grad,
                                   lambda k, grad: grad, k, grad),
      jnp.zeros_like(padded))
  return grad[:num_classes]


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
