"""The loss a run trains with, read from its config section (`loss.name`
plus that loss's hyperparameters) through the registry `ra_jax.losses.LOSSES`.

`loss_fn(config)` gives a function of (embeddings, labels, class_params,
where) -> (per-example loss (B,), logged scalars), so the train step treats
every loss alike.
"""

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from ra_jax import losses


def spec_of(config: Mapping[str, Any]) -> losses.LossSpec:
  """The registry entry of a loss config; unknown names or hyperparameters
  are errors naming them."""
  spec = losses.get_loss(config["name"])
  spec.check_hyperparameters(_hyperparameters(config))
  return spec


def _hyperparameters(config: Mapping[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in config.items() if k != "name"}


def loss_fn(config: Mapping[str, Any]) -> Callable:
  """(embeddings, labels, class_params, where) -> (loss (B,), terms)."""
  spec = spec_of(config)
  hyperparameters = _hyperparameters(config)

  def compute(embeddings, labels, class_params, where):
    loss = spec(embeddings, labels, class_params, where, **hyperparameters)
    terms = spec.logged_terms(embeddings, labels, class_params, where,
                              **hyperparameters)
    return loss, terms

  return compute


def mean_over_valid(per_example: jax.Array, where: jax.Array) -> jax.Array:
  """The batch loss under the losses' contract: sum / number valid."""
  return jnp.sum(per_example) / jnp.maximum(jnp.sum(where), 1)
