"""Paired significance of a difference in mean per-query scores."""

import dataclasses

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
