"""The train step: model -> embeddings -> loss -> optax update, jitted with
the batch sharded over a device mesh (`data` axis) and the state replicated.

Under `jit`, BatchNorm statistics and the loss are computed over the global
batch; XLA inserts the cross-device reductions, so a run on N devices takes
the same step as on one device with the same global batch.
"""

from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ra_jax.models import class_parameters
from ra_jax.training import objective


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  # The repeller's neighbour list (`objective.NeighborLists`), or None: a
  # cache of the anchors, which checkpoints leave out (`saved`).
  neighbors: Any = None

  def saved(self) -> dict[str, Any]:
    """What a checkpoint holds: every field but the neighbour list (rebuilt
    after a restore, `with_neighbors`), in the tree structure checkpoints
    have had from the start, so that older ones restore."""
    return {"step": self.step, "params": self.params,
            "batch_stats": self.batch_stats, "opt_state": self.opt_state}

  @classmethod
  def from_saved(cls, saved: dict[str, Any]) -> "TrainState":
    return cls(**saved)


def create_state(model, tx: optax.GradientTransformation, rng: jax.Array,
                 image_shape) -> TrainState:
  """Initialised parameters and optimizer state."""
  variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32))
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}),
                    opt_state=tx.init(params))


def with_neighbors(state: TrainState,
                   lists: Optional[objective.NeighborLists],
                   mesh: Mesh) -> TrainState:
  """`state` with a neighbour list built from its anchors (none if
  `lists` is None), replicated over `mesh`: after initialising or
  restoring."""
  if lists is None:
    return state.replace(neighbors=None)
  build = jax.jit(lists.build, out_shardings=NamedSharding(mesh, P()))
  return state.replace(neighbors=build(class_parameters(state.params)))


def make_train_step(model, tx: optax.GradientTransformation, loss: Callable,
                    neighbor_lists: Optional[objective.NeighborLists] = None
                    ) -> Callable:
  """(state, batch) -> (state, metrics); batch: image, label, optional mask.
  With `neighbor_lists`, the state's list is brought up to date for its
  anchors and serves the loss's repeller."""

  def train_step(state: TrainState, batch):
    where = batch.get("mask", jnp.ones(batch["label"].shape, bool))
    neighbors = None
    if neighbor_lists is not None:
      neighbors = neighbor_lists.update(class_parameters(state.params),
                                        state.neighbors)

    def compute(params):
      variables = {"params": params, "batch_stats": state.batch_stats}
      embeddings, updates = model.apply(variables, batch["image"], train=True,
                                        mutable=["batch_stats"])
      per_example, terms = loss(embeddings.astype(jnp.float32),
                                batch["label"], class_parameters(params),
                                where, state.step, neighbors)
      return objective.mean_over_valid(per_example, where), (
          updates.get("batch_stats", {}), terms)

    (value, (stats, terms)), grads = jax.value_and_grad(
        compute, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = TrainState(step=state.step + 1,
                           params=optax.apply_updates(state.params, updates),
                           batch_stats=stats, opt_state=opt_state,
                           neighbors=neighbors)
    metrics = {"loss": value, "grad_norm": optax.tree.norm(grads), **terms}
    if neighbors is not None:
      metrics["neighbor_pairs"] = neighbors.count
      metrics["neighbor_builds"] = neighbors.builds
    return new_state, metrics

  return train_step


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all (or the given) devices, axis `data`."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()),
              ("data",))


def shard_step(train_step: Callable, mesh: Mesh) -> Callable:
  """jit with the batch split over `data`, the state replicated and donated."""
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P("data"))
  return jax.jit(train_step, in_shardings=(replicated, batch_sharding),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def global_batch(mesh: Mesh, local_batch: dict) -> dict:
  """A global array per field from this host's part of the batch."""
  sharding = NamedSharding(mesh, P("data"))
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      local_batch)
