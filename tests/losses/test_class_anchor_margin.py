"""The class anchor margin loss's own invariants, terms and sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ra_jax import losses


def _separated_anchors(num_classes, dim, spacing):
  """Anchors on scaled coordinate axes: pairwise distance spacing*sqrt(2)."""
  return jnp.eye(num_classes, dim) * spacing


def test_repel_is_zero_when_anchors_are_two_margins_apart():
  margin = 1.0
  anchors = _separated_anchors(5, 8, spacing=2.0 * margin / np.sqrt(2) + 1e-3)
  terms = losses.class_anchor_margin_terms(
      jnp.zeros((4, 8)), jnp.arange(4), anchors, margin=margin, min_norm=0.5)
  assert terms["repel"] == 0.0
  assert terms["min_anchor_distance"] >= 2.0 * margin
  # A hair closer and the repeller switches on.
  closer = anchors * 0.99
  assert losses.class_anchor_margin_terms(
      jnp.zeros((4, 8)), jnp.arange(4), closer, margin=margin,
      min_norm=0.5)["repel"] > 0.0


def test_norm_is_zero_when_every_anchor_is_long_enough():
  anchors = _separated_anchors(3, 4, spacing=2.0)
  terms = losses.class_anchor_margin_terms(
      jnp.ones((2, 4)), jnp.array([0, 1]), anchors, margin=0.1, min_norm=2.0)
  assert terms["norm"] == 0.0
  np.testing.assert_allclose(terms["mean_anchor_norm"], 2.0)
  short = losses.class_anchor_margin_terms(
      jnp.ones((2, 4)), jnp.array([0, 1]), anchors, margin=0.1, min_norm=2.5)
  np.testing.assert_allclose(short["norm"], 3 * 0.5, rtol=1e-6)


def test_attract_is_zero_on_the_anchors():
  anchors = jax.random.normal(jax.random.PRNGKey(0), (6, 5))
  labels = jnp.array([0, 3, 3, 5, 1, 2, 0])
  terms = losses.class_anchor_margin_terms(anchors[labels], labels, anchors)
  assert terms["attract"] == 0.0


def test_total_is_the_sum_of_its_terms():
  key1, key2 = jax.random.split(jax.random.PRNGKey(1))
  e = jax.random.normal(key1, (10, 3))
  anchors = 0.3 * jax.random.normal(key2, (4, 3))  # close: every term is on
  labels = jnp.arange(10) % 4
  terms = losses.class_anchor_margin_terms(e, labels, anchors, margin=1.0,
                                           min_norm=1.0)
  assert terms["repel"] > 0 and terms["norm"] > 0
  total = losses.class_anchor_margin_loss(e, labels, anchors, margin=1.0,
                                          min_norm=1.0, repel_weight=2.0,
                                          norm_weight=3.0).mean()
  np.testing.assert_allclose(
      total, terms["attract"] + 2.0 * terms["repel"] + 3.0 * terms["norm"],
      rtol=1e-6)


def test_finite_gradients_for_coincident_and_zero_anchors():
  anchors = jnp.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
  e = jnp.zeros((3, 2))
  grads = jax.grad(lambda e, c: losses.class_anchor_margin_loss(
      e, jnp.array([0, 1, 2]), c).mean(), argnums=(0, 1))(e, anchors)
  for g in grads:
    assert np.all(np.isfinite(g))


def test_push_acts_only_within_margin_of_another_anchor():
  # Anchors 4 apart on a line (m = 1): an embedding up to 1.5 off its own
  # anchor towards the other is at least m nearer its own anchor and is not
  # pushed; beyond that the push moves it back towards its own anchor.
  anchors = jnp.array([[0.0, 0.0], [4.0, 0.0]])
  labels = jnp.array([0, 0, 0])
  e = jnp.array([[0.5, 0.0], [1.6, 0.0], [2.5, 0.0]])

  def push(e):
    with_push = losses.class_anchor_margin_loss(e, labels, anchors,
                                                margin=1.0, push_weight=1.0)
    return with_push - losses.class_anchor_margin_loss(e, labels, anchors,
                                                       margin=1.0)

  np.testing.assert_allclose(push(e), [0.0, 0.5 * 0.2**2, 0.5 * 2.0**2],
                             atol=1e-5)
  grad = jax.grad(lambda e: push(e).sum())(e)
  assert grad[0, 0] == 0.0 and grad[1, 0] > 0 and grad[2, 0] > 0
  np.testing.assert_allclose(
      losses.class_anchor_margin_terms(e, labels, anchors, margin=1.0,
                                       push_weight=1.0)["push"],
      np.mean([0.0, 0.5 * 0.2**2, 0.5 * 2.0**2]), rtol=1e-4)


def test_push_is_logged_only_when_it_is_on():
  e, labels, anchors = jnp.ones((2, 3)), jnp.array([0, 1]), jnp.eye(2, 3)
  assert "push" not in losses.class_anchor_margin_terms(e, labels, anchors)
  assert "push" in losses.class_anchor_margin_terms(e, labels, anchors,
                                                    push_weight=0.5)


def test_push_with_one_class_is_zero_with_finite_gradients():
  e = jnp.array([[1.0, 2.0], [0.0, 0.0]])
  loss, grads = jax.value_and_grad(
      lambda e, c: losses.class_anchor_margin_loss(
          e, jnp.array([0, 0]), c, margin=1.0, min_norm=1.0,
          push_weight=1.0).sum(),
      argnums=(0, 1))(e, jnp.zeros((1, 2)))
  np.testing.assert_allclose(loss, 0.5 * 5.0 + 1.0 * 2, rtol=1e-6)
  for g in grads:
    assert np.all(np.isfinite(g))


@pytest.mark.slow
def test_gradient_descent_separates_anchors_and_pulls_embeddings():
  # The loss does what it is for: from near-collapsed anchors, plain gradient
  # descent reaches anchors >= 2m apart, norms >= p, embeddings on anchors.
  anchors = 0.01 * jax.random.normal(jax.random.PRNGKey(2), (5, 4))
  e = jax.random.normal(jax.random.PRNGKey(3), (20, 4))
  labels = jnp.arange(20) % 5

  def step(_, params):
    grads = jax.grad(lambda p: losses.class_anchor_margin_loss(
        p[0], labels, p[1], margin=0.5, min_norm=1.0).mean())(params)
    return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)

  # 2,000 steps in one compiled loop: no per-step dispatch from Python
  params = jax.jit(lambda p: jax.lax.fori_loop(0, 2000, step, p))(
      (e, anchors))
  terms = losses.class_anchor_margin_terms(params[0], labels, params[1],
                                           margin=0.5, min_norm=1.0)
  assert terms["min_anchor_distance"] >= 1.0 - 1e-3
  assert terms["norm"] < 1e-3
  assert terms["attract"] < 1e-3
  np.testing.assert_array_equal(
      losses.nearest_anchor(params[0], params[1]), labels)


def test_nearest_anchor():
  anchors = jnp.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
  e = jnp.array([[9.0, 1.0], [1.0, 8.0], [0.1, -0.2], [5.0, 0.0]])
  labels = losses.nearest_anchor(e, anchors)
  np.testing.assert_array_equal(labels, [1, 2, 0, 0])  # tie -> lower id
  assert labels.dtype == jnp.int32


def _batch(seed, batch=32, classes=7, dim=6):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  return (jax.random.normal(k1, (batch, dim)),
          jax.random.randint(k2, (batch,), 0, classes),
          jax.random.normal(k3, (classes, dim)))


@pytest.mark.slow
def test_sharded_jit_on_8_devices_equals_one_device():
  assert jax.device_count() == 8, "tests/conftest.py asks for 8 CPU devices"
  e, y, anchors = _batch(4)
  where = jnp.arange(32) % 5 != 0

  def loss_and_grads(e, y, anchors, where):
    fn = lambda e, c: (losses.class_anchor_margin_loss(e, y, c, where=where)
                       .sum() / where.sum())
    return jax.value_and_grad(fn, argnums=(0, 1))(e, anchors)

  single = jax.jit(loss_and_grads)(e, y, anchors, where)
  mesh = Mesh(np.array(jax.devices()), ("data",))
  batch_sharding = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())
  sharded_inputs = (jax.device_put(e, batch_sharding),
                    jax.device_put(y, batch_sharding),
                    jax.device_put(anchors, replicated),
                    jax.device_put(where, batch_sharding))
  sharded = jax.jit(loss_and_grads)(*sharded_inputs)
  assert sharded[1][0].sharding.is_equivalent_to(batch_sharding, 2)
  for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_pmap_matches_per_shard_computation():
  e, y, anchors = _batch(5, batch=64)
  fn = lambda e, y, c: losses.class_anchor_margin_loss(e, y, c)
  per_device = jax.pmap(fn, in_axes=(0, 0, None))(
      e.reshape(8, 8, -1), y.reshape(8, 8), anchors)
  one_by_one = jnp.stack(
      [fn(e[8 * i:8 * (i + 1)], y[8 * i:8 * (i + 1)], anchors)
       for i in range(8)])
  np.testing.assert_allclose(per_device, one_by_one, rtol=1e-6)
  np.testing.assert_allclose(per_device.reshape(-1), fn(e, y, anchors),
                             rtol=1e-6)


@pytest.mark.parametrize("name", ["contrastive_loss", "triplet_loss"])
def test_pair_losses_shard_the_batch_too(name):
  e, y, _ = _batch(6)
  fn = jax.jit(lambda e, y: getattr(losses, name)(e, y).mean())
  mesh = Mesh(np.array(jax.devices()), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  np.testing.assert_allclose(
      fn(jax.device_put(e, sharding), jax.device_put(y, sharding)), fn(e, y),
      rtol=1e-5)


def _dense_repulsion(anchors, margin):
  """The repeller straight from its formula, differentiated by autodiff."""
  diff = anchors[:, None, :] - anchors[None, :, :]
  sq = jnp.sum(jnp.square(diff), axis=-1)
  off = ~jnp.eye(anchors.shape[0], dtype=bool) & (sq > 0)
  d = jnp.sqrt(jnp.where(off, sq, 1.0))
  # Coincident distinct anchors (sq == 0) add (2m)^2/2 each with 0 gradient.
  coincident = ~jnp.eye(anchors.shape[0], dtype=bool) & (sq == 0)
  extra = 0.5 * jnp.sum(coincident) * (2 * margin)**2
  return extra + 0.5 * jnp.sum(
      jnp.where(off, jnp.maximum(2 * margin - d, 0.0)**2, 0.))


@pytest.mark.parametrize("num_classes", [300, 601])
def test_tiled_repulsion_matches_dense_formula(num_classes, monkeypatch):
  # Many tiles (up to 128 a side: 3 or 5 parts, padded), and a mix of
  # separated and too-close anchors so that some tiles are skipped in the
  # backward pass.
  from ra_jax.losses import anchor_repulsion as module
  from ra_jax.losses.anchor_repulsion import anchor_repulsion
  monkeypatch.setattr(module, "_MAX_TILE", 128)
  jax.clear_caches()  # traced with the real tile size elsewhere
  key1, key2 = jax.random.split(jax.random.PRNGKey(num_classes))
  with jax.enable_x64(True):
    anchors = jax.random.normal(key1, (num_classes, 6), jnp.float64)
    anchors = anchors.at[:40].multiply(0.05)  # one crowded corner
    anchors = anchors.at[-3:].set(anchors[-3:] * 0.0 + anchors[5])
    margin = jnp.asarray(0.4, jnp.float64)
    repel, min_d = jax.jit(anchor_repulsion)(anchors, margin)
    grads = jax.jit(jax.grad(lambda a, m: anchor_repulsion(a, m)[0],
                             argnums=(0, 1)))(anchors, margin)
    expected, expected_grads = jax.jit(jax.value_and_grad(
        _dense_repulsion, argnums=(0, 1)))(anchors, margin)
    np.testing.assert_allclose(repel, expected, rtol=1e-9)
    np.testing.assert_allclose(grads[0], expected_grads[0], rtol=1e-7,
                               atol=1e-9)
    np.testing.assert_allclose(grads[1], expected_grads[1], rtol=1e-9)
    assert min_d == 0.0  # the three coincident anchors
    assert repel > 0


def test_tiled_repulsion_under_vmap_and_separated_anchors():
  from ra_jax.losses.anchor_repulsion import anchor_repulsion
  anchors = 10.0 * jax.random.normal(jax.random.PRNGKey(0), (2, 400, 16))
  anchors = anchors.at[1, :50].multiply(0.01)
  grads = jax.jit(jax.vmap(jax.grad(lambda a: anchor_repulsion(a, 1.0)[0])))(
      anchors)
  assert np.all(grads[0] == 0.0)  # separated: nothing to push
  expected = jax.jit(jax.grad(_dense_repulsion))(anchors[1], 1.0)
  np.testing.assert_allclose(grads[1], expected, rtol=1e-4, atol=1e-5)
