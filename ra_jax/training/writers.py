"""Where a run's numbers go: a progress bar on the terminal, and scalars to
`workdir/metrics.jsonl` and TensorBoard (`workdir/tensorboard`, written with
tensorboardX, which needs neither TensorFlow nor PyTorch). In an object
store (gs://) metrics.jsonl is rewritten whole on each append, and Cloud
Storage takes about one write per second per object: there the lines are
collected and appended at most every `flush_seconds`, at checkpoints and at
the end.

Only process 0 writes. After a resume, steps between the last checkpoint and
the crash appear twice in metrics.jsonl; the later line is the one that
counts (`read_metrics` keeps it).
"""

import json
import sys
import time
from typing import Mapping, Optional

import tqdm
from absl import logging

from ra_jax import files
from ra_jax.training import runtime
from ra_jax.training import workdir as workdir_lib


def _tensorboardx():
  """tensorboardX, imported without PyTorch: where torch is installed its
  writer imports it (2.2 s of a training run's start on 2 cores) only to
  accept torch tensors, and we write floats. A torch the process has
  already imported is left alone."""
  if "torch" in sys.modules:
    import tensorboardX
    return tensorboardX
  sys.modules["torch"] = None  # `import torch` raises ImportError meanwhile
  try:
    import tensorboardX
  finally:
    if sys.modules.get("torch", 0) is None:
      del sys.modules["torch"]
  return tensorboardX


class MetricWriter:
  """Scalars per step to JSON lines and TensorBoard event files.

  `tensorboard`: also write events (tensorboardX; for gs:// work dirs it
  needs google-cloud-storage, from the `.[gcs]` extra, and without it the
  run goes on with a warning and metrics.jsonl only)."""

  def __init__(self, workdir: str, *, enabled: Optional[bool] = None,
               tensorboard: bool = True, flush_seconds: float = 5.0):
    self.enabled = runtime.is_writer() if enabled is None else enabled
    self.path = workdir_lib.path(workdir, workdir_lib.METRICS)
    # Locally every line is appended at once; in object stores they wait.
    self._flush_seconds = flush_seconds if files.is_remote(workdir) else 0.0
    self._pending: list[str] = []
    self._flushed = -float("inf")  # the first line goes out at once
    self._tensorboard = None
    if self.enabled and tensorboard:
      tensorboardX = _tensorboardx()  # only process 0 needs it
      events = workdir_lib.path(workdir, workdir_lib.TENSORBOARD)
      try:
        self._tensorboard = tensorboardX.SummaryWriter(events, flush_secs=30)
      except ImportError as error:  # gs:// without google-cloud-storage
        logging.warning("no TensorBoard events in %s (%s); metrics.jsonl has"
                        " every scalar", events, error)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    self._pending.append(json.dumps({"step": int(step), **{
        k: float(v) for k, v in scalars.items()}}))
    if time.monotonic() - self._flushed >= self._flush_seconds:
      self.flush()
    if self._tensorboard is not None:
      for name, value in scalars.items():
        self._tensorboard.add_scalar(name, float(value), int(step))

  def flush(self) -> None:
    """Appends the lines collected so far to metrics.jsonl."""
    if self._pending:
      files.append_lines(self.path, self._pending)
      self._pending = []
    self._flushed = time.monotonic()

  def close(self) -> None:
    self.flush()
    if self._tensorboard is not None:
      self._tensorboard.close()
      self._tensorboard = None


def read_metrics(workdir: str) -> list[dict]:
  """metrics.jsonl merged by step (a later line for a step wins), sorted."""
  by_step: dict[int, dict] = {}
  path = workdir_lib.path(workdir, workdir_lib.METRICS)
  if files.exists(path):
    for line in files.read_text(path).splitlines():
      if line.strip():
        row = json.loads(line)
        by_step.setdefault(row["step"], {}).update(row)
  return [by_step[s] for s in sorted(by_step)]


def progress_bar(start: int, total: int) -> tqdm.tqdm:
  """Steps done, rate and ETA; the loop sets loss terms and images/s as the
  postfix. Silent on processes other than 0."""
  return tqdm.tqdm(initial=start, total=total, unit="step", smoothing=0.1,
                   dynamic_ncols=True, mininterval=1.0,
                   disable=not runtime.is_writer())
