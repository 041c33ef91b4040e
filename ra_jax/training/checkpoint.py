"""Orbax checkpoints of the train state and the data iterator's position.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a run killed during a save resumes from the previous complete
checkpoint; `latest_step` only sees finished ones.
"""

from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


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


def restore_latest(mngr: ocp.CheckpointManager,
                   abstract_state: Any) -> Optional[tuple[int, Any, dict]]:
  """(step, state, data iterator state) of the newest checkpoint, or None."""
  step = mngr.latest_step()
  if step is None:
    return None
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=ocp.args.JsonRestore()))
  return step, restored["state"], restored["data"]


def abstract(state: Any) -> Any:
  """Shapes, dtypes and shardings of `state`, for restoring into."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
