"""The loss a run trains with, read from its config section (`loss.name`,
`loss.geometry` and that loss's hyperparameters) through the registry
`ra_jax.losses.LOSSES`.

`loss_fn(config)` gives a function of (embeddings, labels, class_params,
where, step) -> (per-example loss (B,), logged scalars), so the train step
treats every loss alike.
"""

import dataclasses
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp

from ra_jax import losses


def spec_of(config: Mapping[str, Any]) -> losses.LossSpec:
  """The registry entry of a loss config; unknown names or hyperparameters
  are errors naming them."""
  spec = losses.get_loss(config["name"])
  spec.check_hyperparameters(_hyperparameters(config))
  return spec


def check_values(spec: losses.LossSpec, config: Mapping[str, Any],
                 num_classes: int, dim: int) -> None:
  """Traces the loss once (shapes only, nothing compiled or computed) with
  the configured hyperparameters as Python numbers, which the loss checks
  while tracing: a value out of range is a ValueError naming it before a
  run starts (inside the jitted step they are baked in, unchecked)."""
  embeddings = jax.ShapeDtypeStruct((2, dim), jnp.float32)
  labels = jax.ShapeDtypeStruct((2,), jnp.int32)
  class_params = {name: jax.ShapeDtypeStruct(
      (num_classes, dim) if shape == "matrix" else (num_classes,),
      jnp.float32) for name, shape in spec.class_params.items()}
  hyperparameters = _hyperparameters(config)
  try:
    jax.eval_shape(lambda e, l, c: spec(e, l, c, **hyperparameters),
                   embeddings, labels, class_params)
  except ValueError as error:
    raise ValueError(f"loss {spec.name!r}: {error}") from error


def geometry_of(config: Mapping[str, Any]) -> str:
  """The run's geometry: `loss.geometry` if set (checked against what the
  loss allows), else the loss's default."""
  return spec_of(config).resolve_geometry(config.get("geometry") or None)


def _hyperparameters(config: Mapping[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in config.items() if k not in ("name", "geometry")}


def loss_fn(config: Mapping[str, Any], warmup_steps: int = 0) -> Callable:
  """(embeddings, labels, class_params, where, step) -> (loss (B,), terms).

  With `warmup_steps` > 0 the loss's warm-up weights (`LossSpec.warmup`,
  e.g. the class anchor margin loss's attractor) grow linearly from
  1 / warmup_steps of their value at step 0 to their value at step
  warmup_steps - 1; a loss without any is an error."""
  spec = spec_of(config)
  hyperparameters = _hyperparameters(config)
  if warmup_steps < 0:
    raise ValueError(f"loss warm-up steps must be >= 0, got {warmup_steps}")
  if warmup_steps and not spec.warmup:
    raise ValueError(f"loss {spec.name!r} has no terms to warm up"
                     " (train.loss_warmup_steps must be 0 for it)")

  def compute(embeddings, labels, class_params, where, step, neighbors=None):
    values = dict(hyperparameters)
    if warmup_steps:
      ramp = jnp.minimum(1.0, (step + 1.0) / warmup_steps)
      for name in spec.warmup:
        values[name] = ramp * values.get(name, spec.hyperparameters[name])
    loss = spec(embeddings, labels, class_params, where, neighbors=neighbors,
                **values)
    terms = spec.logged_terms(embeddings, labels, class_params, where,
                              neighbors=neighbors, **hyperparameters)
    return loss, terms

  return compute


@dataclasses.dataclass(frozen=True)
class NeighborLists:
  """A run's neighbour list for its loss's repeller (`train.neighbor_skin`
  > 0): built from the class parameters at the start (and after a restore:
  it is a cache of them, not checkpointed), brought up to date before every
  step. The loss is the same with or without it."""
  param: str
  margin: float
  skin: float
  capacity: Optional[int]

  def build(self, class_params: Mapping[str, jax.Array]
            ) -> losses.RepulsionNeighbors:
    return losses.build_neighbors(class_params[self.param], self.margin,
                                  skin=self.skin, capacity=self.capacity)

  def update(self, class_params: Mapping[str, jax.Array],
             neighbors: losses.RepulsionNeighbors
             ) -> losses.RepulsionNeighbors:
    return losses.update_neighbors(class_params[self.param], neighbors,
                                   self.margin, skin=self.skin)


def neighbor_lists(loss_config: Mapping[str, Any],
                   train_config: Mapping[str, Any],
                   dim: int) -> Optional[NeighborLists]:
  """The run's `NeighborLists`, or None (`train.neighbor_skin` 0: every
  anchor pair at every step). The skin is a fraction of the margin m."""
  skin = float(train_config.get("neighbor_skin", 0.0) or 0.0)
  capacity = int(train_config.get("neighbor_capacity", 0) or 0)
  if skin < 0 or capacity < 0:
    raise ValueError(f"train.neighbor_skin={skin} and train.neighbor_capacity"
                     f"={capacity} must be >= 0")
  if not skin:
    return None
  spec = spec_of(loss_config)
  if spec.repeller is None:
    raise ValueError(f"train.neighbor_skin={skin}: loss {spec.name!r} has no"
                     " repeller for a neighbour list to serve (set it to 0)")
  margin = float(spec.repeller.margin(_hyperparameters(loss_config), dim))
  return NeighborLists(spec.repeller.param, margin, skin * margin,
                       capacity or None)


def mean_over_valid(per_example: jax.Array, where: jax.Array) -> jax.Array:
  """The batch loss under the losses' contract: sum / number valid."""
  return jnp.sum(per_example) / jnp.maximum(jnp.sum(where), 1)
