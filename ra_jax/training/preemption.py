"""Stopping on SIGTERM with a checkpoint: how a preempted or stopped run
keeps its progress.

Schedulers warn before they take the machines away: Cloud TPU sends SIGTERM
about 30 s before a spot/preemptible VM goes, SLURM sends SIGTERM and then
SIGKILL after its KillWait (30 s by default), `launch/tpu_pod.sh stop`
sends TERM before KILL. The train loop asks `StopRequests.requested(step)`
after every step; when it says yes, every process saves a checkpoint at
that step and the run ends (`Preempted`, exit status 143 from
`python -m ra_jax.train`). The same command resumes from that checkpoint.

- In a multi-process job (`jax.distributed`), jax's preemption service
  receives the SIGTERM on any process and agrees on a step at which every
  process reaches its sync point (`multihost_utils.
  reached_preemption_sync_point`), so all of them save the same step. Its
  handler is jax's own: nothing is installed here.
- In a single process, a SIGTERM handler sets a flag for the next step.
"""

import signal
import threading
from typing import Optional

import jax
from jax.experimental import multihost_utils


class Preempted(Exception):
  """The run stopped on SIGTERM after saving a checkpoint at `step`."""

  def __init__(self, step: int, directory: str):
    super().__init__(f"stopped by SIGTERM after step {step}: checkpoint"
                     f" {step} saved in {directory}; run the same command"
                     " to resume")
    self.step = step
    self.directory = directory


class StopRequests:
  """A context in which SIGTERM asks the train loop to save and stop."""

  def __init__(self):
    self._received: Optional[int] = None
    self._previous = None
    self._distributed = False

  def __enter__(self) -> "StopRequests":
    self._distributed = jax.distributed.is_initialized()
    if (not self._distributed and
        threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _handle(self, signum, frame) -> None:
    del frame
    self._received = signum

  def requested(self, step: int) -> bool:
    """Whether the run should save at `step` and stop. Call it after every
    step, on every process (a multi-process job agrees on the step)."""
    if self._distributed:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._received is not None
