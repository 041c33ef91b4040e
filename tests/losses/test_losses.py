"""Every loss against its naive NumPy reference, plus the shared contract:
masking, dtypes, jit/vmap and finite gradients in degenerate cases."""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ra_jax import losses
from tests.losses import numpy_reference as ref


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  fn: Callable  # fn(e, y, *params, where=None) -> (B,)
  reference: Callable  # same arguments, NumPy float64
  num_params: int  # per-class (C, D) matrices after (e, y)


def _cases():
  m, p = 0.9, 1.3
  return [
      Case("cam", lambda e, y, c, where=None: losses.class_anchor_margin_loss(
          e, y, c, margin=m, min_norm=p, repel_weight=0.7, norm_weight=1.5,
          where=where), lambda e, y, c, where=None: ref.class_anchor_margin(
              e, y, c, m, p, 0.7, 1.5, where), 1),
      # margin 2 so that most examples of random inputs are pushed
      Case("cam_push", lambda e, y, c, where=None:
           losses.class_anchor_margin_loss(e, y, c, margin=2.0, min_norm=p,
                                           push_weight=0.6, where=where),
           lambda e, y, c, where=None: ref.class_anchor_margin(
               e, y, c, 2.0, p, where=where, wp=0.6), 1),
      Case("softmax_ce",
           lambda e, y, w, where=None: losses.softmax_cross_entropy_loss(
               e, y, w, where=where),
           lambda e, y, w, where=None: ref.softmax_cross_entropy(
               e, y, w, where=where), 1),
      Case("center", lambda e, y, c, w, where=None: losses.center_loss(
          e, y, c, w, center_weight=0.3, where=where),
           lambda e, y, c, w, where=None: ref.center(
               e, y, c, w, None, 0.3, where), 2),
      Case("arcface", lambda e, y, w, where=None: losses.arcface_loss(
          e, y, w, scale=8.0, margin=0.4, where=where),
           lambda e, y, w, where=None: ref.arcface(e, y, w, 8.0, 0.4, where),
           1),
      Case("contrastive", lambda e, y, where=None: losses.contrastive_loss(
          e, y, positive_margin=0.2, negative_margin=2.5, where=where),
           lambda e, y, where=None: ref.contrastive(e, y, 0.2, 2.5, False,
                                                     where), 0),
      Case("contrastive_sq", lambda e, y, where=None: losses.contrastive_loss(
          e, y, positive_margin=0.0, negative_margin=6.0, squared=True,
          where=where),
           lambda e, y, where=None: ref.contrastive(e, y, 0.0, 6.0, True,
                                                     where), 0),
      *[
          Case(f"triplet_{mining}", lambda e, y, where=None, mining=mining:
               losses.triplet_loss(e, y, margin=0.5, mining=mining,
                                   where=where),
               lambda e, y, where=None, mining=mining: ref.triplet(
                   e, y, 0.5, mining, False, where), 0)
          for mining in losses.MININGS
      ],
      Case("triplet_hard_sq", lambda e, y, where=None: losses.triplet_loss(
          e, y, margin=1.0, mining="hard", squared=True, where=where),
           lambda e, y, where=None: ref.triplet(e, y, 1.0, "hard", True, where),
           0),
      Case("proxy_anchor", lambda e, y, q, where=None: losses.proxy_anchor_loss(
          e, y, q, scale=6.0, margin=0.1, where=where),
           lambda e, y, q, where=None: ref.proxy_anchor(e, y, q, 6.0, 0.1,
                                                        where), 1),
  ]


CASES = _cases()
SHAPES = [(6, 3, 4), (12, 5, 8), (9, 9, 3), (16, 2, 5)]  # (B, C, D)


def _inputs(seed, batch, classes, dim, num_params):
  rng = np.random.default_rng(seed)
  e = rng.normal(size=(batch, dim))
  y = rng.integers(0, classes, size=batch)
  params = [rng.normal(size=(classes, dim)) for _ in range(num_params)]
  return e, y, params


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_values_match_reference(case, shape):
  e, y, params = _inputs(sum(shape), *shape, case.num_params)
  # jitted: one compilation instead of one per primitive (eager calls are
  # compared with jitted ones in test_jit_vmap_and_bfloat16)
  got = jax.jit(case.fn)(jnp.asarray(e, jnp.float32), jnp.asarray(y),
                         *[jnp.asarray(w, jnp.float32) for w in params])
  assert got.shape == (shape[0],)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, case.reference(e, y, *params), rtol=2e-4,
                             atol=2e-4)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("shape", SHAPES[:2], ids=str)
def test_gradients_match_reference(case, shape):
  e, y, params = _inputs(7 + sum(shape), *shape, case.num_params)
  args = [e, *params]

  def total(*arrays):
    return jnp.mean(case.fn(arrays[0], jnp.asarray(y), *arrays[1:]))

  with jax.enable_x64(True):
    grads = jax.jit(jax.grad(total, argnums=tuple(range(len(args)))))(
        *[jnp.asarray(a, jnp.float64) for a in args])
  for k, (arg, grad) in enumerate(zip(args, grads)):

    def ref_total(x, k=k):
      arrays = list(args)
      arrays[k] = x
      return np.mean(case.reference(arrays[0], y, *arrays[1:]))

    expected = ref.numeric_gradient(ref_total, arg.copy())
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6,
                               err_msg=f"gradient of argument {k}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_masked_examples_contribute_nothing(case):
  batch, classes, dim = 12, 4, 5
  e, y, params = _inputs(3, batch, classes, dim, case.num_params)
  where = np.arange(batch) % 3 != 0
  params = [jnp.asarray(w, jnp.float32) for w in params]
  fn = jax.jit(case.fn)
  masked = fn(jnp.asarray(e, jnp.float32), jnp.asarray(y), *params,
              where=jnp.asarray(where))
  subset = fn(jnp.asarray(e[where], jnp.float32), jnp.asarray(y[where]),
              *params)
  np.testing.assert_array_equal(masked[~where], 0.0)
  np.testing.assert_allclose(masked[where], subset, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      case.reference(e, y, *params, where=where)[where], subset, rtol=2e-4,
      atol=2e-4)

  # Whatever the masked rows hold (even NaN), they change neither the values
  # nor the gradients of the valid rows.
  poisoned = e.copy()
  poisoned[~where] = np.nan
  grad_fn = jax.jit(jax.grad(lambda x: jnp.sum(case.fn(
      x, jnp.asarray(y), *params, where=jnp.asarray(where)))))
  clean = grad_fn(jnp.asarray(e, jnp.float32))
  dirty_values = fn(jnp.asarray(poisoned, jnp.float32), jnp.asarray(y),
                    *params, where=jnp.asarray(where))
  np.testing.assert_allclose(dirty_values[where], masked[where], rtol=1e-6)
  assert np.all(clean[~where] == 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_jit_vmap_and_bfloat16(case):
  batch, classes, dim = 8, 3, 6
  stacks = [_inputs(s, batch, classes, dim, case.num_params) for s in range(3)]
  e = jnp.asarray(np.stack([s[0] for s in stacks]), jnp.float32)
  y = jnp.asarray(np.stack([s[1] for s in stacks]))
  params = [jnp.asarray(np.stack([s[2][k] for s in stacks]), jnp.float32)
            for k in range(case.num_params)]
  eager = jnp.stack([
      case.fn(e[i], y[i], *[w[i] for w in params]) for i in range(3)])
  jitted = jax.jit(case.fn)(e[0], y[0], *[w[0] for w in params])
  vmapped = jax.vmap(case.fn)(e, y, *params)
  np.testing.assert_allclose(jitted, eager[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(vmapped, eager, rtol=1e-5, atol=1e-6)

  low = case.fn(e[0].astype(jnp.bfloat16), y[0],
                *[w[0].astype(jnp.bfloat16) for w in params])
  assert low.dtype == jnp.float32  # computed in float32, not bfloat16
  exact = case.fn(e[0].astype(jnp.bfloat16).astype(jnp.float32), y[0],
                  *[w[0].astype(jnp.bfloat16).astype(jnp.float32)
                    for w in params])
  np.testing.assert_allclose(low, exact, rtol=1e-6, atol=1e-6)


def _degenerate_inputs(num_params, dim=4):
  """(name, e, y, params): zeros, coincident points, no positives/negatives."""
  zeros = np.zeros((6, dim))
  ones = np.ones((6, dim))
  rng = np.random.default_rng(0)
  random = rng.normal(size=(6, dim))
  zero_params = [np.zeros((3, dim))] * num_params
  same_params = [np.ones((3, dim))] * num_params
  random_params = [rng.normal(size=(3, dim)) for _ in range(num_params)]
  return [
      ("zero_everything", zeros, np.array([0, 0, 1, 1, 2, 2]), zero_params),
      ("coincident_everything", ones, np.array([0, 1, 2, 0, 1, 2]),
       same_params),
      ("one_class_no_negatives", random, np.zeros(6, int), random_params),
      ("distinct_labels_no_positives", random[:3], np.arange(3), random_params),
      ("zero_embeddings", zeros, np.array([0, 1, 2, 0, 1, 2]), random_params),
  ]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_gradients_finite_in_degenerate_cases(case):
  # one function, so inputs of the same shapes share a compilation
  value_and_grads = jax.jit(jax.value_and_grad(
      lambda y, *a: jnp.mean(case.fn(a[0], y, *a[1:])),
      argnums=tuple(range(1, 2 + case.num_params))))
  for name, e, y, params in _degenerate_inputs(case.num_params):
    arrays = [jnp.asarray(a, jnp.float32) for a in [e, *params]]
    value, grads = value_and_grads(jnp.asarray(y, jnp.int32), *arrays)
    assert np.isfinite(value), name
    for grad in grads:
      assert np.all(np.isfinite(grad)), name
    np.testing.assert_allclose(value, np.mean(case.reference(e, y, *params)),
                               rtol=1e-5, atol=1e-5, err_msg=name)


def test_bad_shapes_name_the_argument():
  e, y = jnp.zeros((4, 3)), jnp.zeros((4,), jnp.int32)
  with pytest.raises(ValueError, match="anchors"):
    losses.class_anchor_margin_loss(e, y, jnp.zeros((2, 5)))
  with pytest.raises(ValueError, match="labels"):
    losses.contrastive_loss(e, jnp.zeros((5,), jnp.int32))
  with pytest.raises(ValueError, match="labels.*integers"):
    losses.triplet_loss(e, jnp.zeros((4,)))
  with pytest.raises(ValueError, match="where"):
    losses.softmax_cross_entropy_loss(e, y, jnp.zeros((2, 3)),
                                      where=jnp.ones((3,), bool))
  with pytest.raises(ValueError, match="mining"):
    losses.triplet_loss(e, y, mining="hardest")
