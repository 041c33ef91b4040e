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
import numpy as np
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


def save_params(path: str, step: int, variables: dict) -> None:
  """A run's final parameters and BatchNorm statistics (no optimizer
  state) as one msgpack file (flax.serialization), written atomically:
  what analyses of a finished run need once its checkpoints are gone."""
  from flax import serialization
  payload = {"step": int(step),
             "variables": jax.tree.map(np.asarray, dict(variables))}
  with files.atomic_write(path, "wb") as f:
    f.write(serialization.msgpack_serialize(payload))


def load_params(path: str, abstract_variables: Any) -> tuple[int, Any]:
  """(step, variables) saved by `save_params`, checked against the
  shapes and dtypes of `abstract_variables` (a pytree of arrays or
  ShapeDtypeStructs); errors name the file and the first mismatch."""
  from flax import serialization
  try:
    with files.open_file(path, "rb") as f:
      payload = serialization.msgpack_restore(f.read())
    step, saved = int(payload["step"]), payload["variables"]
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise ValueError(f"{path}: not a readable parameter file ({error})"
                     ) from error
  want = jax.tree_util.tree_flatten_with_path(abstract_variables)[0]
  got = dict(jax.tree_util.tree_flatten_with_path(saved)[0])
  if len(got) != len(want):
    raise ValueError(f"{path}: {len(got)} arrays, the model has"
                     f" {len(want)}")
  leaves = []
  for key, spec in want:
    value = got.get(key)
    name = jax.tree_util.keystr(key)
    if value is None:
      raise ValueError(f"{path}: no array {name}")
    if value.shape != spec.shape or value.dtype != spec.dtype:
      raise ValueError(f"{path}: {name} is {value.dtype} {value.shape},"
                       f" the model's {spec.dtype} {spec.shape}")
    leaves.append(value)
  return step, jax.tree.unflatten(jax.tree.structure(abstract_variables),
                                  leaves)
