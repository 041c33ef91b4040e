"""Imprinted class vectors: the formula, checked against a direct
computation, and bad input."""

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from ra_jax.models import imprinted_class_vectors


@hypothesis.settings(deadline=None, max_examples=30)
@hypothesis.given(num_classes=st.integers(2, 12), dim=st.integers(1, 9),
                  extra=st.integers(0, 30), scale=st.floats(0.1, 10.0),
                  seed=st.integers(0, 2**16))
def test_rows_are_centred_class_means_at_the_asked_scale(
    num_classes, dim, extra, scale, seed):
  rng = np.random.default_rng(seed)
  labels = np.concatenate([np.arange(num_classes),
                           rng.integers(0, num_classes, extra)])
  rng.shuffle(labels)
  embeddings = rng.normal(3.0, 2.0, (len(labels), dim)).astype(np.float32)
  got = imprinted_class_vectors(embeddings, labels, num_classes, scale)
  means = np.stack([embeddings[labels == y].mean(0, dtype=np.float64)
                    for y in range(num_classes)])
  means -= embeddings.mean(0, dtype=np.float64)
  rms = np.sqrt(np.mean(np.sum(means ** 2, axis=1)))
  hypothesis.assume(rms > 1e-3)
  want = means * scale * np.sqrt(dim) / rms
  assert got.shape == (num_classes, dim) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
  np.testing.assert_allclose(np.sqrt(np.mean(np.sum(got ** 2, 1))),
                             scale * np.sqrt(dim), rtol=1e-4)


def test_bad_input_is_named():
  embeddings = np.ones((4, 3), np.float32)
  with pytest.raises(ValueError, match=r"cannot imprint 1 of 3 classes.*"
                     r"\[2\]"):
    imprinted_class_vectors(np.eye(4, 3), [0, 1, 0, 1], 3, 1.0)
  with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
    imprinted_class_vectors(embeddings, [0, 1, 2, 1], 2, 1.0)
  with pytest.raises(ValueError, match="class means are all equal"):
    imprinted_class_vectors(embeddings, [0, 1, 0, 1], 2, 1.0)
  with pytest.raises(ValueError, match="scale must be > 0"):
    imprinted_class_vectors(np.eye(4, 3), [0, 1, 0, 1], 2, 0.0)
  with pytest.raises(ValueError, match=r"\(N, D\)"):
    imprinted_class_vectors(np.ones(4), [0, 1, 0, 1], 2, 1.0)
