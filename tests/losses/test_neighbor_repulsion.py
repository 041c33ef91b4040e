"""The repeller over a neighbour list: the list holds exactly the pairs it
should, and the loss it gives equals the dense one (value and gradient,
float64) along gradient-descent trajectories, with every fallback taken."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ra_jax.losses import build_neighbors
from ra_jax.losses import class_anchor_margin_loss
from ra_jax.losses import class_anchor_margin_terms
from ra_jax.losses import update_neighbors
from ra_jax.losses import neighbor_repulsion
from ra_jax.losses.anchor_repulsion import anchor_repulsion


def _listed(neighbors) -> set:
  pairs = np.asarray(neighbors.pairs)
  return {tuple(p) for p in pairs[pairs[:, 0] >= 0].tolist()}


def _pairs_closer_than(anchors, cutoff) -> set:
  a = np.asarray(anchors, np.float64)
  d = np.sqrt(np.sum((a[:, None] - a[None]) ** 2, axis=-1))
  i, j = np.nonzero(np.triu(d < cutoff, k=1))
  return set(zip(i.tolist(), j.tolist()))


@hypothesis.settings(max_examples=25, deadline=None)
# A few sizes, so that examples share compiled shapes (each new shape
# compiles the build afresh: 16 s for 25 examples of any size).
@hypothesis.given(num_classes=st.sampled_from([2, 3, 18, 70]),
                  dim=st.sampled_from([1, 3, 5]),
                  spread=st.floats(0.05, 3.0), seed=st.integers(0, 2**16),
                  max_tile=st.sampled_from([4, 17, 2048]))
def test_build_lists_every_pair_inside_the_cutoff(num_classes, dim, spread,
                                                   seed, max_tile):
  anchors = spread * np.random.default_rng(seed).normal(
      size=(num_classes, dim)).astype(np.float32)
  margin, skin = 0.5, 0.25
  with pytest.MonkeyPatch.context() as patch:
    # Small tiles: many of them, padded, written at offsets.
    patch.setattr(neighbor_repulsion, "_BUILD_TILE", max_tile)
    neighbors = build_neighbors(anchors, margin, skin=skin,
                                capacity=num_classes * num_classes)
  listed = _listed(neighbors)
  cutoff = 2 * margin + skin
  assert _pairs_closer_than(anchors, cutoff * (1 - 1e-5)) <= listed
  assert listed <= _pairs_closer_than(anchors, cutoff * (1 + 1e-3))
  assert all(i < j for i, j in listed)
  assert int(neighbors.count) == len(listed)
  assert int(neighbors.builds) == 1


def _anchor_loss(anchors, embeddings, labels, margin, neighbors=None):
  return jnp.mean(class_anchor_margin_loss(
      embeddings, labels, anchors, margin=margin, min_norm=0.5,
      neighbors=neighbors))


@pytest.mark.parametrize("start", ["collapsed", "spread"])
def test_value_and_gradient_equal_dense_along_descent(start):
  # Gradient descent on the anchors from a collapsed start (every pair
  # inside 2m) or a spread one: pairs cross the margin both ways, the list
  # is rebuilt when anchors move past the skin and kept otherwise, and at
  # every step the loss and its gradient equal the dense formula's.
  num_classes, dim, margin, skin = 24, 4, 1.0, 0.3
  with jax.enable_x64(True):
    key = jax.random.PRNGKey(0)
    scale = 0.01 if start == "collapsed" else 1.5
    anchors = scale * jax.random.normal(key, (num_classes, dim), jnp.float64)
    labels = jnp.arange(96) % num_classes
    embeddings = 0.8 * jax.random.normal(jax.random.PRNGKey(1), (96, dim),
                                         jnp.float64)
    margin = jnp.asarray(margin, jnp.float64)
    dense = jax.jit(jax.value_and_grad(_anchor_loss, argnums=(0, 1)))
    listed = jax.jit(jax.value_and_grad(_anchor_loss, argnums=(0, 1)))
    update = jax.jit(lambda a, n: update_neighbors(a, n, margin, skin=skin))
    hold = jax.jit(neighbor_repulsion.neighbors_hold)
    neighbors = build_neighbors(anchors, margin, skin=skin)
    inside = set()
    for _ in range(60):
      neighbors = update(anchors, neighbors)
      assert hold(anchors, neighbors, margin)
      value, grads = listed(anchors, embeddings, labels, margin, neighbors)
      want, want_grads = dense(anchors, embeddings, labels, margin)
      np.testing.assert_allclose(value, want, rtol=1e-12)
      for got, expected in zip(grads, want_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
      inside.add(frozenset(_pairs_closer_than(anchors, 2 * margin)))
      anchors = anchors - 0.1 * grads[0]
  builds = int(neighbors.builds)
  assert 1 < builds < 30  # rebuilt, and reused in between
  assert len(inside) >= 3  # pairs crossed 2m during the descent


def test_stale_list_falls_back_to_every_pair():
  anchors = jax.random.normal(jax.random.PRNGKey(0), (30, 3))
  neighbors = build_neighbors(anchors, 0.5, skin=0.1)
  moved = 0.05 * anchors  # every anchor moves far past skin / 2
  assert not neighbor_repulsion.neighbors_hold(moved, neighbors, 0.5)
  got = neighbor_repulsion.repulsion(moved, 0.5, neighbors)
  want = anchor_repulsion(moved, jnp.asarray(0.5))
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
  assert float(got[0]) > 0  # the list was built when no pair was that close


@pytest.mark.parametrize("capacity, max_tile", [(5, 2048), (100, 10)])
def test_overflow_falls_back_to_every_pair(capacity, max_tile):
  # Too many close pairs for the list, in total or for one tile's share of
  # it: the count says so, the list does not hold, and the repeller
  # computes every pair.
  anchors = 0.01 * jax.random.normal(jax.random.PRNGKey(0), (50, 3))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(neighbor_repulsion, "_BUILD_TILE", max_tile)
    neighbors = build_neighbors(anchors, 0.5, skin=0.1, capacity=capacity)
  # Saturated, not the total: ~C^2 / 2 pairs would wrap an int32 count.
  assert int(neighbors.count) == capacity + 1
  assert not neighbor_repulsion.neighbors_hold(anchors, neighbors, 0.5)
  loss = jax.grad(lambda a, n: _anchor_loss(a, anchors, jnp.arange(50), 0.5,
                                            n))
  np.testing.assert_allclose(loss(anchors, neighbors),
                             loss(anchors, None), rtol=1e-5, atol=1e-7)


def test_terms_and_jit_with_the_list():
  anchors = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (40, 8))
  anchors = anchors.at[1].set(anchors[0] + 0.1)  # one pair inside 2m
  embeddings = jax.random.normal(jax.random.PRNGKey(1), (16, 8))
  labels = jnp.arange(16)
  neighbors = build_neighbors(anchors, 1.0, skin=0.5)
  terms = jax.jit(lambda n: class_anchor_margin_terms(
      embeddings, labels, anchors, margin=1.0, min_norm=0.5, neighbors=n))
  got, want = terms(neighbors), terms(None)
  for name in want:
    # float32: the dense one rounds |a|^2 + |b|^2 - 2ab, the list does not.
    np.testing.assert_allclose(got[name], want[name], rtol=1e-4, err_msg=name)


def test_no_listed_pair_means_no_repulsion_and_a_bound_on_the_distance():
  anchors = 10.0 * jnp.eye(6)  # every pair 14.1 apart
  neighbors = build_neighbors(anchors, 1.0, skin=1.0)
  assert int(neighbors.count) == 0
  moved = anchors.at[0, 0].add(0.25)
  repel, smallest = neighbor_repulsion.repulsion(moved, 1.0, neighbors)
  # Unlisted pairs were at least 3 apart and moved at most 0.25 each.
  assert float(repel) == 0.0
  np.testing.assert_allclose(smallest, 3.0 - 2 * 0.25)


def test_non_finite_anchor_gives_nan_as_the_dense_repeller_does():
  anchors = jax.random.normal(jax.random.PRNGKey(0), (10, 3))
  neighbors = build_neighbors(anchors, 0.1, skin=0.1)
  repel, _ = neighbor_repulsion.repulsion(anchors.at[3, 0].set(jnp.nan), 0.1,
                                          neighbors)
  assert jnp.isnan(repel)


def test_bad_input_names_the_problem():
  anchors = jnp.ones((4, 3))
  with pytest.raises(ValueError, match="anchors must be"):
    build_neighbors(jnp.ones(4), 1.0, skin=0.1)
  with pytest.raises(ValueError, match="capacity"):
    build_neighbors(anchors, 1.0, skin=0.1, capacity=0)
  with pytest.raises(ValueError, match=r"capacity must be in \[1, .*int32"):
    build_neighbors(anchors, 1.0, skin=0.1, capacity=2**31)
  with pytest.raises(ValueError, match="skin"):
    build_neighbors(anchors, 1.0, skin=-0.1)
  neighbors = build_neighbors(anchors, 1.0, skin=0.1)
  with pytest.raises(ValueError, match="built for"):
    class_anchor_margin_loss(jnp.ones((2, 3)), jnp.zeros(2, jnp.int32),
                             jnp.ones((5, 3)), margin=1.0, neighbors=neighbors)
