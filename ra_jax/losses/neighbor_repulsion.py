"""The repeller over a neighbour list: per-step cost that follows the anchor
pairs that can matter, not C^2, and the same value and gradient.

  R = sum_{y < y'} max(0, 2m - ||c_y - c_y'||)^2

Only pairs closer than 2m contribute. A neighbour list (Verlet's, from
molecular dynamics) keeps the pairs closer than a cutoff 2m + skin when it
was built from anchors c^0. While every anchor has moved less than skin / 2
since, a pair that was not listed is still farther apart than 2m (each end
moved less than skin / 2, so the distance shrank by less than skin): the
listed pairs give R exactly. The state (`RepulsionNeighbors`) is passed and
returned explicitly, optax style:

  neighbors = build_neighbors(anchors, margin, skin=..., capacity=...)
  # every step:
  neighbors = update_neighbors(anchors, neighbors, margin, skin=...)
  loss = class_anchor_margin_loss(e, y, anchors, margin=margin,
                                  neighbors=neighbors)

`update_neighbors` rebuilds the list (O(C^2 D / 2) time in the repeller's
tiles, O(T^2) memory) only when some anchor has moved more than the skin
allows.
`repulsion` checks the same condition on the anchors it is given and, if
the list does not hold (stale, or overflowed its fixed capacity), computes
every pair (`anchor_repulsion`): exact whatever the caller did.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from ra_jax.distances import safe_norm
from ra_jax.losses import anchor_repulsion as tiled
from ra_jax.losses.anchor_repulsion import anchor_repulsion

# Relative rounding of a squared distance from the Gram expansion (float32).
_ROUNDING = 64 * float(jnp.finfo(jnp.float32).eps)
# Pairs gathered at a time by the repeller over the list.
_CHUNK = 2048
# Larger tiles than the repeller's: each tile's share of the capacity must
# leave room for a crowded corner of the anchors.
_BUILD_TILE = 2048
# The count adds up to a tile's pairs to at most capacity + 1.
_MAX_CAPACITY = 2**31 - 1 - 2 * _BUILD_TILE**2


class RepulsionNeighbors(NamedTuple):
  """The anchor pairs the repeller looks at, and what makes them enough.

  Attributes:
    reference: (C, D) the anchors the list was built from.
    pairs: (K, 2) int32, the pairs (i < j) closer than `cutoff` then; -1
      after the last.
    count: () int32, the pairs found at the build, saturating at K + 1:
      more than K means the list overflowed and the repeller computes every
      pair.
    cutoff: () the distance the pairs were listed below (2m + skin).
    builds: () int32, builds so far (for logging).
  """
  reference: jax.Array
  pairs: jax.Array
  count: jax.Array
  cutoff: jax.Array
  builds: jax.Array


def _cutoff(anchors: jax.Array, margin, skin) -> jax.Array:
  """2m + skin, the distance pairs are listed below; the skin checked."""
  if not isinstance(skin, jax.core.Tracer) and not float(skin) > 0.0:
    raise ValueError(f"skin must be > 0 (how far anchors may move before"
                     f" the list is rebuilt), got {skin}")
  return 2.0 * jnp.asarray(margin, anchors.dtype) + skin


def _build(anchors: jax.Array, cutoff: jax.Array, capacity: int,
           builds: jax.Array) -> RepulsionNeighbors:
  """The list of pairs closer than `cutoff`, tile by tile of the pair
  matrix (the repeller's tiles: half the products, O(T^2) memory)."""
  num_classes = anchors.shape[0]
  side, tiles = tiled.tiling(num_classes, _BUILD_TILE)
  padded, sq_norms = tiled.padded_anchors(anchors, side, tiles)
  # Pairs one tile may add: a share of the capacity with room for uneven
  # tiles; a tile with more sets the count past the capacity (overflow).
  per_tile = min(capacity, side * side,
                 max(64, -(-4 * capacity // len(tiles))))
  tiles = jnp.asarray(tiles)

  def tile(k, carry):
    pairs, count = carry
    sq, _, _, row_sq, col_sq = tiled.tile_squared_distances(
        padded, sq_norms, num_classes, side, tiles[k])
    # The slack covers the rounding of |a|^2 + |b|^2 - 2ab, so that a pair
    # just inside the cutoff is never left out (an extra pair costs nothing).
    slack = _ROUNDING * (row_sq[:, None] + col_sq[None, :])
    close = sq < jnp.square(cutoff) + slack
    found = jnp.sum(close, dtype=jnp.int32)

    def write(pairs):
      i, j = jnp.nonzero(close, size=per_tile, fill_value=-1)
      new = jnp.stack([jnp.where(i >= 0, tiles[k, 0] * side + i, -1),
                       jnp.where(j >= 0, tiles[k, 1] * side + j, -1)],
                      axis=1).astype(jnp.int32)
      # Written from the current count on (the buffer has room for one
      # tile past the capacity); what overflows is never read.
      at = jnp.minimum(count, capacity)
      return jax.lax.dynamic_update_slice(pairs, new,
                                          (at, jnp.zeros((), at.dtype)))

    # Most tiles of separated anchors list nothing: skip the compaction.
    pairs = jax.lax.cond(found > 0, write, lambda pairs: pairs, pairs)
    # Saturates: collapsed anchors have ~C^2 / 2 close pairs, past int32
    # for C = 100,000, and a wrapped count would look like a list that holds.
    return pairs, jnp.minimum(
        count + jnp.where(found > per_tile, capacity + 1, found), capacity + 1)

  empty = jnp.full((capacity + per_tile, 2), -1, jnp.int32)
  pairs, count = jax.lax.fori_loop(0, len(tiles), tile,
                                   (empty, jnp.zeros((), jnp.int32)))
  return RepulsionNeighbors(anchors, pairs[:capacity], count,
                            jnp.asarray(cutoff, anchors.dtype), builds + 1)


def build_neighbors(anchors: jax.Array, margin, *, skin,
                    capacity: Optional[int] = None) -> RepulsionNeighbors:
  """The neighbour list of `anchors` (C, D): the pairs closer than
  2 * margin + skin, at most `capacity` of them (default 32 C).

  The skin trades rebuilds for list length: a list stays valid until some
  anchor has moved skin / 2, and holds the pairs up to 2m + skin apart.
  """
  anchors = jnp.asarray(anchors)
  if anchors.ndim != 2:
    raise ValueError(f"anchors must be (C, D), got {anchors.shape}")
  capacity = 32 * anchors.shape[0] if capacity is None else int(capacity)
  if not 1 <= capacity <= _MAX_CAPACITY:
    raise ValueError(f"capacity must be in [1, {_MAX_CAPACITY}] (an int32"
                     f" count), got {capacity}")
  return _build(anchors, _cutoff(anchors, margin, skin), capacity,
                jnp.zeros((), jnp.int32))


def _unlisted_bound(anchors: jax.Array,
                    neighbors: RepulsionNeighbors) -> jax.Array:
  """A lower bound on the distance of every pair the list left out: it was
  at least the cutoff, and each end has moved at most `moved` since."""
  if anchors.shape != neighbors.reference.shape:
    raise ValueError(f"anchors {anchors.shape} are not the ones the"
                     f" neighbour list was built for"
                     f" {neighbors.reference.shape}")
  moved = jnp.max(safe_norm(anchors - neighbors.reference))
  return neighbors.cutoff - 2.0 * moved


def neighbors_hold(anchors: jax.Array, neighbors: RepulsionNeighbors,
                   margin) -> jax.Array:
  """Whether the list gives the exact repeller for `anchors` and `margin`:
  it did not overflow, and no unlisted pair can have come within 2m (every
  anchor moved at most (cutoff - 2m) / 2 since the build)."""
  return _holds(neighbors, _unlisted_bound(anchors, neighbors), margin)


def _holds(neighbors: RepulsionNeighbors, bound: jax.Array,
           margin) -> jax.Array:
  """`neighbors_hold`, given the unlisted pairs' lower bound."""
  return (neighbors.count <= neighbors.pairs.shape[0]) & (
      bound >= 2.0 * margin)


def update_neighbors(anchors: jax.Array, neighbors: RepulsionNeighbors,
                     margin, *, skin) -> RepulsionNeighbors:
  """`neighbors`, or a new list built from `anchors` when it no longer
  holds for them (`neighbors_hold`). Under jit both branches compile; the
  rebuild runs only when needed."""
  anchors = jnp.asarray(anchors)
  cutoff = _cutoff(anchors, margin, skin)
  capacity = neighbors.pairs.shape[0]
  return jax.lax.cond(
      neighbors_hold(anchors, neighbors, margin), lambda: neighbors,
      lambda: _build(anchors, cutoff, capacity, neighbors.builds))


def _pair_chunks(neighbors: RepulsionNeighbors) -> tuple[jax.Array, int]:
  """The listed pairs as (chunks, _CHUNK, 2), and how many chunks hold any
  (the loops stop there: cost follows the listed count, not the capacity)."""
  pairs = neighbors.pairs
  capacity = pairs.shape[0]
  chunks = -(-capacity // _CHUNK)
  pairs = jnp.pad(pairs, ((0, chunks * _CHUNK - capacity), (0, 0)),
                  constant_values=-1).reshape(chunks, _CHUNK, 2)
  used = jnp.minimum(neighbors.count, capacity)
  return pairs, (used + _CHUNK - 1) // _CHUNK


def _chunk_hinge(anchors, chunk, margin):
  """(hinges max(0, 2m - d), differences c_i - c_j, distances) of one chunk
  of pairs; zero hinge on the unused slots."""
  listed = chunk[:, 0] >= 0
  difference = (anchors[jnp.maximum(chunk[:, 0], 0)] -
                anchors[jnp.maximum(chunk[:, 1], 0)])
  distance = safe_norm(difference)
  hinge = jnp.where(listed, jnp.maximum(2.0 * margin - distance, 0.0), 0.0)
  return hinge, difference, jnp.where(listed, distance, jnp.inf)


@jax.custom_vjp
def _listed(anchors, margin, pairs, used):
  def chunk(k, carry):
    total, smallest = carry
    hinge, _, distance = _chunk_hinge(anchors, pairs[k], margin)
    return (total + jnp.sum(jnp.square(hinge)),
            jnp.minimum(smallest, jnp.min(distance)))
  zero = jnp.zeros((), anchors.dtype)
  return jax.lax.fori_loop(0, used, chunk,
                           (zero, jnp.asarray(jnp.inf, anchors.dtype)))


def _listed_forward(anchors, margin, pairs, used):
  return _listed(anchors, margin, pairs, used), (anchors, margin, pairs,
                                                 used)


def _listed_backward(residuals, cotangents):
  # dR/dc_i = -2 h (c_i - c_j) / d = -dR/dc_j, dR/dm = 4 h; zero where
  # d = 0, as safe_norm's gradient is (the dense repeller's convention).
  anchors, margin, pairs, used = residuals
  g = cotangents[0]  # the smallest distance carries no gradient

  def chunk(k, carry):
    grad, grad_margin = carry
    hinge, difference, distance = _chunk_hinge(anchors, pairs[k], margin)
    scale = jnp.where(distance > 0, -2.0 * hinge / distance, 0.0)
    push = g * scale[:, None] * difference
    i, j = jnp.maximum(pairs[k, :, 0], 0), jnp.maximum(pairs[k, :, 1], 0)
    grad = grad.at[i].add(push).at[j].add(-push)
    return grad, grad_margin + g * 4.0 * jnp.sum(hinge)

  grad, grad_margin = jax.lax.fori_loop(
      0, used, chunk, (jnp.zeros_like(anchors),
                       jnp.zeros((), anchors.dtype)))
  return (grad, jnp.reshape(grad_margin, jnp.shape(margin)).astype(
      jnp.result_type(margin)), None, None)


_listed.defvjp(_listed_forward, _listed_backward)


def listed_repulsion(anchors: jax.Array, neighbors: RepulsionNeighbors,
                     margin) -> tuple[jax.Array, jax.Array]:
  """(R over the listed pairs, the smallest listed distance; inf when none
  is listed). Exact only where `neighbors_hold`.

  Chunks of pairs are gathered up to the listed count, so the cost is
  O(K D) for K listed pairs whatever the capacity, and the gradient is
  written by hand (scatter-adds, no (K, D) residuals kept).
  """
  margin = jnp.asarray(margin, anchors.dtype)
  pairs, used = _pair_chunks(neighbors)
  return _listed(anchors, margin, pairs, used)


def repulsion(anchors: jax.Array, margin,
              neighbors: Optional[RepulsionNeighbors] = None
              ) -> tuple[jax.Array, jax.Array]:
  """(R, smallest inter-anchor distance): over the neighbour list where it
  holds, else over every pair (`anchor_repulsion`).

  R and its gradient equal the dense ones whenever the list is used. The
  smallest distance is then the smaller of the smallest listed one and a
  lower bound on the unlisted ones (at least 2m): exact whenever some pair
  is closer than 2m (that pair is listed), otherwise between 2m and the
  true smallest distance.
  """
  margin = jnp.asarray(margin, anchors.dtype)
  if neighbors is None:
    return anchor_repulsion(anchors, margin)
  bound = _unlisted_bound(anchors, neighbors)
  # A non-finite anchor must show as NaN, as in the dense repeller.
  broken = ~jnp.all(jnp.isfinite(anchors))

  def listed():
    repel, smallest = listed_repulsion(anchors, neighbors, margin)
    return repel, jnp.minimum(smallest, jax.lax.stop_gradient(bound))

  return jax.lax.cond(_holds(neighbors, bound, margin) & ~broken,
                      listed, lambda: anchor_repulsion(anchors, margin))
