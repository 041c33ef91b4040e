"""Paired significance of a difference between two methods: a bootstrap
over queries of mean per-query scores, and a t-test over training seeds."""

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PairedTest:
  difference: float  # mean(a - b) over the queries both score
  low: float  # 2.5th percentile of the resampled differences
  high: float  # 97.5th percentile
  p_value: float  # two-sided
  num_queries: int


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *,
                     resamples: int = 10_000, seed: int = 0) -> PairedTest:
  """Bootstrap over queries of mean(a - b), paired: a[q] and b[q] are two
  methods' scores on the same query q (NaN = no score; such queries are
  dropped from both).

  p is twice the smaller share of resampled means on either side of 0
  (at most 1), with the observed sample counted once so that it is never
  exactly 0.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f"paired scores must be two (Q,) arrays of one shape,"
                     f" got {a.shape} and {b.shape}")
  keep = ~(np.isnan(a) | np.isnan(b))
  d = a[keep] - b[keep]
  if not len(d):
    raise ValueError("no query has a score from both methods")
  rng = np.random.default_rng(seed)
  means = np.empty(resamples)
  for start in range(0, resamples, 1000):  # bounded memory
    stop = min(start + 1000, resamples)
    picks = rng.integers(0, len(d), (stop - start, len(d)))
    means[start:stop] = d[picks].mean(axis=1)
  below = (np.sum(means <= 0) + 1) / (resamples + 1)
  above = (np.sum(means >= 0) + 1) / (resamples + 1)
  return PairedTest(float(d.mean()), float(np.percentile(means, 2.5)),
                    float(np.percentile(means, 97.5)),
                    float(min(1.0, 2 * min(below, above))), int(len(d)))


@dataclasses.dataclass(frozen=True)
class SeedTest:
  difference: float  # mean of the per-seed differences
  t: float
  p_value: float  # two-sided
  num_seeds: int


def paired_t_test(differences: Sequence[float]) -> Optional[SeedTest]:
  """Student's t-test of per-seed differences d_s = a_s - b_s (the two
  methods trained with seed s), H0: E[d] = 0:

    t = mean(d) / (std(d, ddof=1) / sqrt(n)),  n - 1 degrees of freedom.

  Two-sided p. None with fewer than 2 seeds. Unlike the bootstrap over
  queries it sees the training run's own variance, so with few seeds it is
  the weaker, more honest test. Differences that are all equal and non-zero
  give t = +-inf, p = 0; all zero give p = 1.
  """
  d = np.asarray(differences, np.float64)
  if d.ndim != 1:
    raise ValueError(f"per-seed differences must be a (S,) array, got"
                     f" shape {d.shape}")
  if len(d) < 2:
    return None
  if np.isnan(d).any():
    raise ValueError(f"per-seed differences contain NaN: {d.tolist()}")
  if np.all(d == d[0]):  # scipy returns NaN for zero spread
    t = 0.0 if d[0] == 0 else math.copysign(math.inf, d[0])
    return SeedTest(float(d[0]), t, 1.0 if d[0] == 0 else 0.0, len(d))
  from scipy import stats  # 1.6 s to import: only when a test runs
  result = stats.ttest_1samp(d, 0.0)
  return SeedTest(float(d.mean()), float(result.statistic),
                  float(result.pvalue), len(d))
