"""Bad input to the losses: a clear error or a documented result, never a
plausible wrong number. Property-based tests (hypothesis) look for the
cases a hand-written list would miss."""

import functools

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from ra_jax import losses

jax_settings = hypothesis.settings(max_examples=12, deadline=None,
                                   derandomize=True)
CLASS_LOSSES = [name for name, spec in losses.LOSSES.items()
                if spec.class_params]


def _class_params(spec, num_classes, dim, rng):
  return {name: jnp.asarray(rng.normal(size=(num_classes, dim)
                                       if shape == "matrix" else
                                       (num_classes,)), jnp.float32)
          for name, shape in spec.class_params.items()}


@functools.lru_cache(maxsize=None)
def _value_and_grads(name):
  """jit(value and gradients w.r.t. embeddings and class parameters)."""
  spec = losses.get_loss(name)

  def total(embeddings, labels, params, where):
    per_example = spec(embeddings, labels, params, where)
    return jnp.sum(per_example) / jnp.maximum(jnp.sum(where), 1)
  return jax.jit(jax.value_and_grad(total, argnums=(0, 2)))


@pytest.mark.parametrize("name", list(losses.LOSSES))
@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf, 1e30])
def test_masked_rows_reach_neither_values_nor_gradients(name, poison):
  spec = losses.get_loss(name)
  rng = np.random.default_rng(0)
  embeddings = rng.normal(size=(8, 4)).astype(np.float32)
  labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
  where = np.array([1, 1, 1, 1, 1, 1, 0, 0], bool)
  params = _class_params(spec, 3, 4, rng)
  clean_value, (clean_e, clean_p) = _value_and_grads(name)(
      embeddings, labels, params, where)
  poisoned = embeddings.copy()
  poisoned[~where] = poison
  bad_labels = labels.copy()
  bad_labels[~where] = -7  # padding often carries -1 or garbage labels
  value, (grad_e, grad_p) = _value_and_grads(name)(poisoned, bad_labels,
                                                  params, where)
  assert np.isfinite(value) and value == pytest.approx(float(clean_value))
  np.testing.assert_array_equal(grad_e[~where], 0.0)
  np.testing.assert_allclose(grad_e, clean_e, rtol=1e-6, atol=1e-7)
  for key in grad_p:
    assert np.all(np.isfinite(grad_p[key])), key
    np.testing.assert_allclose(grad_p[key], clean_p[key], rtol=1e-6,
                               atol=1e-7)


def test_a_nan_anchor_shows_in_the_loss_and_every_term_under_jit():
  rng = np.random.default_rng(1)
  embeddings = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
  labels = jnp.asarray([0, 1, 2, 0, 1, 2])
  anchors = jnp.asarray(5 * rng.normal(size=(4, 3)), jnp.float32)
  broken = anchors.at[3, 1].set(jnp.nan)  # a class no example belongs to
  loss = jax.jit(losses.class_anchor_margin_loss)(embeddings, labels, broken)
  assert np.all(np.isnan(loss))
  terms = jax.jit(losses.class_anchor_margin_terms)(embeddings, labels, broken)
  for name in ("repel", "norm", "min_anchor_distance", "mean_anchor_norm"):
    assert np.isnan(terms[name]), name
  with pytest.raises(ValueError, match="`anchors` holds NaN or inf in 1 row"):
    losses.class_anchor_margin_loss(embeddings, labels, broken)  # eager


@pytest.mark.parametrize("name", CLASS_LOSSES)
def test_labels_outside_the_classes_are_errors_when_eager(name):
  spec = losses.get_loss(name)
  rng = np.random.default_rng(2)
  params = _class_params(spec, 3, 4, rng)
  embeddings = jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)
  for bad in ([0, 1, 3, 0], [0, -1, 2, 0]):
    with pytest.raises(ValueError, match=r"`labels` must be class ids in"
                       r" \[0, 3\).*got values from (-1|0) to (2|3)"):
      spec(embeddings, jnp.asarray(bad), params)
  masked = spec(embeddings, jnp.asarray([0, 1, 3, 0]), params,
                jnp.asarray([True, True, False, True]))  # masked: fine
  assert masked[2] == 0.0 and np.all(np.isfinite(masked))


def test_under_jit_checks_are_opt_in_through_checkify():
  loss = losses.get_loss("cam")
  params = {"anchors": jnp.eye(3, 4)}
  embeddings = jnp.ones((2, 4))
  labels = jnp.asarray([0, 5])
  checked = checkify.checkify(jax.jit(functools.partial(
      loss, class_params=params, checks=True)))
  error, _ = checked(embeddings, labels)
  with pytest.raises(checkify.JaxRuntimeError,
                     match=r"class ids in \[0, 3\).*from 0 to 5"):
    error.throw()
  error, _ = checked(embeddings.at[0, 0].set(jnp.inf), jnp.asarray([0, 1]))
  with pytest.raises(checkify.JaxRuntimeError,
                     match="`embeddings` holds NaN or inf in 1 row"):
    error.throw()
  error, value = checked(embeddings, jnp.asarray([0, 1]))
  error.throw()  # good input: no error
  # Without checks, jit cannot look at values: documented, not checked.
  assert jax.jit(functools.partial(loss, class_params=params))(
      embeddings, labels).shape == (2,)


@pytest.mark.parametrize("call,message", [
    (lambda e, y, c: losses.class_anchor_margin_loss(e, y, c, margin=0.0),
     r"`margin` must be a finite number > 0.0, got 0.0"),
    (lambda e, y, c: losses.class_anchor_margin_loss(e, y, c, min_norm=-1),
     r"`min_norm` must be a finite number >= 0.0, got -1"),
    (lambda e, y, c: losses.class_anchor_margin_loss(e, y, c,
                                                     repel_weight=-0.5),
     "`repel_weight` must be"),
    (lambda e, y, c: losses.class_anchor_margin_loss(e, y, c,
                                                     norm_weight=np.nan),
     "`norm_weight` must be a finite number"),
    (lambda e, y, c: losses.class_anchor_margin_loss(e, y, c[:0]),
     r"`anchors` must have at least one class \(row\), got shape \(0, 3\)"),
    (lambda e, y, c: losses.class_anchor_margin_loss(e, y, c.astype(int)),
     "`anchors` must be floats"),
    (lambda e, y, c: losses.arcface_loss(e, y, c, scale=0.0),
     "`scale` must be a finite number > 0.0"),
    (lambda e, y, c: losses.arcface_loss(e, y, c, margin=4.0),
     r"`margin` is an angle in \[0, pi\)"),
    (lambda e, y, c: losses.proxy_anchor_loss(e, y, c, scale=-1.0),
     "`scale` must be"),
    (lambda e, y, c: losses.contrastive_loss(e, y, negative_margin=0.0),
     "`negative_margin` must be a finite number > 0.0"),
    (lambda e, y, c: losses.triplet_loss(e, y, margin=-0.1),
     "`margin` must be a finite number >= 0.0"),
    (lambda e, y, c: losses.center_loss(e, y, c, c, center_weight=-1.0),
     "`center_weight` must be"),
    (lambda e, y, c: losses.center_loss(e, y, c, c[:2]),
     "must have one row per class each|class ids in"),
    (lambda e, y, c: losses.softmax_cross_entropy_loss(e, y, c, jnp.zeros(2)),
     r"`bias` must have shape \(3,\)"),
    (lambda e, y, c: losses.triplet_loss(e.astype(int), y),
     "`embeddings` must be floats"),
    (lambda e, y, c: losses.triplet_loss(e, y, where=jnp.ones(4) * 0.5),
     "`where` must be a boolean mask"),
])
def test_out_of_range_arguments_name_themselves(call, message):
  e = jnp.ones((4, 3))
  y = jnp.asarray([0, 1, 2, 0])
  c = jnp.asarray(np.random.default_rng(3).normal(size=(3, 3)), jnp.float32)
  with pytest.raises(ValueError, match=message):
    call(e, y, c)


def test_nearest_anchor_checks_its_shapes():
  with pytest.raises(ValueError, match=r"`anchors` must have shape \(C, 3\)"):
    losses.nearest_anchor(jnp.ones((2, 3)), jnp.ones((4, 2)))


def _dense_cam(embeddings, labels, anchors, margin=1.0, min_norm=1.0):
  """The paper's formula with no custom derivative: the reference."""
  attract = 0.5 * jnp.sum(jnp.square(embeddings - anchors[labels]), axis=1)
  diff = anchors[:, None] - anchors[None]
  distance = jnp.sqrt(jnp.sum(jnp.square(diff), -1) + jnp.eye(len(anchors)))
  off = 1.0 - jnp.eye(len(anchors))
  repel = 0.5 * jnp.sum(off * jnp.square(jnp.maximum(2 * margin - distance,
                                                     0.0)))
  norm = jnp.sum(jnp.maximum(min_norm - jnp.linalg.norm(anchors, axis=1), 0))
  return attract + repel + norm


@pytest.mark.slow
def test_forward_mode_matches_the_dense_formula():
  rng = np.random.default_rng(4)
  embeddings = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  labels = jnp.asarray([0, 1, 2, 3, 0])
  anchors = jnp.asarray(0.6 * rng.normal(size=(4, 3)), jnp.float32)  # close

  def ours(a):
    return losses.class_anchor_margin_loss(embeddings, labels, a, margin=1.0,
                                           min_norm=1.0).mean()

  def dense(a):
    return _dense_cam(embeddings, labels, a).mean()

  tangent = jnp.asarray(rng.normal(size=anchors.shape), jnp.float32)
  # jitted: eagerly, every primitive of the two JVPs compiles on its own
  jvp = jax.jit(lambda f, a, t: jax.jvp(f, (a,), (t,)), static_argnums=0)
  value, derivative = jvp(ours, anchors, tangent)
  want_value, want_derivative = jvp(dense, anchors, tangent)
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  np.testing.assert_allclose(derivative, want_derivative, rtol=1e-4)
  np.testing.assert_allclose(jax.jit(jax.jacfwd(ours))(anchors),
                             jax.grad(dense)(anchors), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(jax.jit(jax.hessian(ours))(anchors),
                             jax.jit(jax.hessian(dense))(anchors), rtol=1e-3,
                             atol=1e-5)


# Property-based: a handful of shapes (each compiles once), any values.
@st.composite
def _batches(draw):
  batch = 6  # one shape per loss (each compiles once); any values
  classes = draw(st.sampled_from([2, 5]))
  scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
  embeddings = draw(hnp.arrays(np.float32, (batch, 3), elements=st.floats(
      -4, 4, width=32))) * scale
  labels = draw(hnp.arrays(np.int32, (batch,), elements=st.integers(
      0, classes - 1)))
  where = draw(hnp.arrays(bool, (batch,)))
  duplicate = draw(st.booleans())
  if duplicate:  # coincident points
    embeddings[1:] = embeddings[0]
  return embeddings, labels, where, classes


@pytest.mark.parametrize("name", list(losses.LOSSES))
@jax_settings
@hypothesis.given(batch=_batches(), seed=st.integers(0, 3))
def test_any_batch_gives_finite_values_and_masked_rows_do_nothing(
    name, batch, seed):
  embeddings, labels, where, classes = batch
  spec = losses.get_loss(name)
  params = _class_params(spec, classes, 3, np.random.default_rng(seed))
  value, (grad_e, grad_p) = _value_and_grads(name)(embeddings, labels, params,
                                                  where)
  assert np.isfinite(value)
  assert np.all(np.isfinite(grad_e))
  assert all(np.all(np.isfinite(g)) for g in grad_p.values())
  np.testing.assert_array_equal(grad_e[~where], 0.0)
  shuffled = embeddings.copy()
  shuffled[~where] = np.random.default_rng(seed).normal(
      size=shuffled[~where].shape) * 1e6
  again, _ = _value_and_grads(name)(shuffled, labels, params, where)
  assert again == value
