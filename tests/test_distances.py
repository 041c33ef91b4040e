"""ra_jax.distances: values against NumPy and finite gradients at zero."""

import jax
import jax.numpy as jnp
import numpy as np

from ra_jax import distances


def test_pairwise_distances_match_numpy():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
  expected = np.linalg.norm(x[:, None] - y[None], axis=-1)
  np.testing.assert_allclose(
      distances.pairwise_distances(jnp.asarray(x), jnp.asarray(y)), expected,
      rtol=1e-5)
  np.testing.assert_allclose(
      distances.pairwise_squared_distances(jnp.asarray(x), jnp.asarray(y)),
      expected**2, rtol=1e-5)


def test_self_distances_are_zero_and_never_negative():
  x = 1e3 * jax.random.normal(jax.random.PRNGKey(0), (50, 16))
  sq = distances.pairwise_squared_distances(x, x)
  assert np.all(np.asarray(sq) >= 0)
  # The expansion's rounding error is relative to ||x||^2, not to d^2.
  scale = float(jnp.max(jnp.sum(x * x, axis=-1)))
  np.testing.assert_allclose(np.diag(sq), 0.0, atol=1e-6 * scale)


def test_gradients_at_zero_are_zero_not_nan():
  assert jax.grad(distances.safe_sqrt)(0.0) == 0.0
  np.testing.assert_array_equal(jax.grad(distances.safe_norm)(jnp.zeros(3)),
                                np.zeros(3))
  grad = jax.grad(lambda x: distances.pairwise_distances(x, x).sum())(
      jnp.ones((3, 2)))
  assert np.all(np.isfinite(grad))


def test_cosine_similarity_handles_zero_vectors():
  x = jnp.array([[1.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
  sim = distances.cosine_similarity_matrix(x, x)
  np.testing.assert_allclose(sim[0], [1.0, 0.0, 0.6], rtol=1e-6)
  np.testing.assert_array_equal(sim[1], 0.0)
  assert np.all(np.isfinite(jax.grad(
      lambda x: distances.cosine_similarity_matrix(x, x).sum())(x)))


def test_compute_dtype_upcasts_low_precision_only():
  assert distances.compute_dtype(jnp.zeros(2, jnp.bfloat16)) == jnp.float32
  assert distances.compute_dtype(jnp.zeros(2, jnp.float32)) == jnp.float32
