"""Training speed that counts training only.

The clock starts when the first step has finished (so compilation is left
out) and stops while the loop evaluates or saves (`paused`), so images/s
measures the train step and the input pipeline feeding it.
"""

import contextlib
import time
from typing import Iterator, Optional


class Throughput:
  """Images per second of training, for `batch_size` images a step."""

  def __init__(self, batch_size: int):
    self.batch_size = batch_size
    self._start: Optional[float] = None
    self._from_step = 0
    self._paused = 0.0

  @property
  def started(self) -> bool:
    return self._start is not None

  def start(self, step: int) -> None:
    """The clock starts now, after `step` steps (the first one finished)."""
    self._start, self._from_step, self._paused = time.perf_counter(), step, 0.0

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    """Time spent inside the block is not training time."""
    began = time.perf_counter()
    try:
      yield
    finally:
      self._paused += time.perf_counter() - began

  def images_per_second(self, step: int) -> Optional[float]:
    """The rate over the steps since `start`, or None before a timed step."""
    if self._start is None or step <= self._from_step:
      return None
    seconds = time.perf_counter() - self._start - self._paused
    return (step - self._from_step) * self.batch_size / seconds
