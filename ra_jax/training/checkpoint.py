"""Orbax checkpoints of the train state and the data iterator's position.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a run killed during a save resumes from the previous complete
checkpoint; `latest_step` only sees finished ones. A finished checkpoint
damaged later is detected when restoring and skipped (`restore_latest`).
"""

import os
import time
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from ra_jax import files

# Where a checkpoint that fails to restore is moved: beside the checkpoints
# directory, with this suffix.
UNREADABLE_SUFFIX = "_unreadable"


def manager(directory: str, *, every: int, keep: int) -> ocp.CheckpointManager:
  """Saves every `every` steps (plus forced saves), keeps the last `keep`."""
  return ocp.CheckpointManager(
      directory,
      options=ocp.CheckpointManagerOptions(
          save_interval_steps=every, max_to_keep=keep, create=True,
          enable_async_checkpointing=False),
      item_names=("state", "data"))


def save(mngr: ocp.CheckpointManager, step: int, state: Any,
         data_state: dict, *, force: bool = False) -> bool:
  return mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave(data_state)), force=force)


def restore_latest(mngr: ocp.CheckpointManager, abstract_state: Any
                   ) -> Optional[tuple[int, Any, dict]]:
  """(step, state, data iterator state) of the newest readable checkpoint,
  or None.

  A checkpoint that fails to restore (files deleted or truncated by hand, a
  disk that filled up) is skipped with a warning and moved, not deleted, to
  `<checkpoints>_unreadable/<step>`, so the run resumes from the one before
  and can save that step again.
  """
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          data=ocp.args.JsonRestore()))
    except Exception as error:  # orbax raises many kinds; all mean unreadable
      _set_aside(mngr, step, error)
      continue
    return step, restored["state"], restored["data"]
  return None


def _set_aside(mngr: ocp.CheckpointManager, step: int, error: Exception):
  directory = os.fspath(mngr.directory)
  target = os.path.join(directory.rstrip("/") + UNREADABLE_SUFFIX, str(step))
  logging.warning("checkpoint %s/%d cannot be restored (%s: %s); skipping it"
                  " and moving it to %s", directory, step,
                  type(error).__name__, str(error).splitlines()[0][:200],
                  target)
  if jax.process_index() == 0:
    if files.exists(target):
      target += f".{int(time.time())}"
    files.move(os.path.join(directory, str(step)), target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"ra_jax_skip_checkpoint_{step}")
  mngr.reload()
