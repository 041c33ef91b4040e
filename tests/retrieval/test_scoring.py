"""The scoring kernels: the blocked top-k against a stable sort."""

import hypothesis
import hypothesis.strategies as st
import numpy as np

from ra_jax.retrieval import scoring


@hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
@hypothesis.given(k=st.integers(1, 3), extra=st.integers(0, 70),
                  levels=st.sampled_from([1, 3, 40, 300]), infs=st.floats(0.0, 0.9),
                  seed=st.integers(0, 2**16))
def test_blocked_top_k_equals_a_stable_sort_ties_and_inf_included(
    k, extra, levels, infs, seed):
  """Rows long enough for the blocked selection (>= 4 k blocks), values
  from a few levels (many ties, across block boundaries) and +inf (masked
  entries): values and positions equal a stable argsort's first k."""
  width = 4 * k * scoring._BLOCK + extra
  rng = np.random.default_rng(seed)
  values = rng.integers(0, levels, (3, width)).astype(np.float32)
  values[rng.random((3, width)) < infs] = np.inf
  got_values, got_positions = scoring.top_k_smallest(values, k)
  want = np.argsort(values, axis=1, kind="stable")[:, :k]
  np.testing.assert_array_equal(got_positions, want)
  np.testing.assert_array_equal(got_values,
                                np.take_along_axis(values, want, axis=1))


def test_blocked_top_k_breaks_a_tie_across_blocks_by_position():
  """Block 1 has the smallest minimum, but the tie at the k-th value goes
  to the earlier position, in block 0 (as `lax.top_k` and a stable sort
  do)."""
  block = scoring._BLOCK
  values = np.full((1, 8 * block), 9.0, np.float32)
  values[0, 3] = 1.0  # block 0
  values[0, block + 1] = 0.0  # block 1: the smallest minimum
  values[0, block + 2] = 1.0  # ties with position 3, comes later
  _, positions = scoring.top_k_smallest(values, 2)
  np.testing.assert_array_equal(positions, [[block + 1, 3]])
