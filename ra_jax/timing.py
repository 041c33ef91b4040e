"""Wall time of a call, measured the one way ra_jax measures it: a warm-up
call first (it compiles, fills caches), then the median of `repeats` timed
calls, each waited for (jax dispatches asynchronously)."""

import statistics
import time
from typing import Any, Callable

import jax


def median_seconds(fn: Callable[[], Any], repeats: int = 3
                   ) -> tuple[float, Any]:
  """(median seconds of `repeats` calls of `fn` after a warm-up call, the
  last call's result)."""
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  result = jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times), result
