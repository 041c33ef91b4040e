"""Paired significance: the bootstrap over queries and the t-test over
seeds."""

import numpy as np
import pytest

from ra_jax.report import significance


def test_paired_bootstrap():
  rng = np.random.default_rng(0)
  b = rng.uniform(size=2000)
  better = significance.paired_bootstrap(b + 0.05 + rng.normal(0, 0.01, 2000),
                                         b)
  assert better.low > 0.04 and better.high < 0.06 and better.p_value < 0.001
  same = significance.paired_bootstrap(b + rng.normal(0, 0.1, 2000), b)
  assert same.low < 0 < same.high and same.p_value > 0.01
  nan = significance.paired_bootstrap([1.0, np.nan, 0.5], [0.5, 0.2, 0.5])
  assert nan.num_queries == 2 and nan.difference == pytest.approx(0.25)
  with pytest.raises(ValueError, match="two \\(Q,\\) arrays of one shape"):
    significance.paired_bootstrap([1.0], [1.0, 2.0])
  with pytest.raises(ValueError, match="no query has a score"):
    significance.paired_bootstrap([np.nan], [1.0])


@pytest.mark.parametrize("differences", [[0.05, 0.06, 0.07],
                                         [0.01, -0.03, 0.004],
                                         [-0.2, -0.1, -0.15]])
def test_paired_t_test_matches_the_closed_form_for_three_seeds(differences):
  d = np.asarray(differences)
  t = d.mean() / (d.std(ddof=1) / np.sqrt(3))
  result = significance.paired_t_test(differences)
  assert result.t == pytest.approx(t) and result.num_seeds == 3
  # Student's t with 2 degrees of freedom: P(|T| > t) = 1 - t / sqrt(t^2 + 2)
  assert result.p_value == pytest.approx(1 - abs(t) / np.sqrt(t * t + 2))


def test_paired_t_test_edges():
  assert significance.paired_t_test([0.01]) is None
  same = significance.paired_t_test([0.02, 0.02])
  assert same.t == np.inf and same.p_value == 0.0
  zero = significance.paired_t_test([0.0, 0.0, 0.0])
  assert zero.t == 0.0 and zero.p_value == 1.0
  with pytest.raises(ValueError, match="contain NaN"):
    significance.paired_t_test([0.01, np.nan])
