"""Which loss a run trains with, and the per-class parameters it needs.

`loss_fn(config)` turns a loss config (`name` plus that loss's
hyperparameters) into a function of (embeddings, labels, class_params,
where) -> (per-example loss (B,), scalar metrics), so the train step treats
every loss alike.
"""

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from ra_jax import losses

# loss name -> (per-class parameters the head must create, hyperparameters)
LOSSES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cam": (("anchors",), ("margin", "min_norm", "repel_weight",
                           "norm_weight")),
    "ce": (("kernel", "bias"), ()),
    "center": (("centers", "kernel", "bias"), ("center_weight",)),
    "arcface": (("kernel",), ("scale", "margin")),
    "proxy_anchor": (("proxies",), ("scale", "margin")),
    "contrastive": ((), ("positive_margin", "negative_margin", "squared")),
    "triplet": ((), ("margin", "mining", "squared")),
}


def class_params_for(name: str) -> tuple[str, ...]:
  """The per-class parameters (head attributes) loss `name` trains."""
  _check_name(name)
  return LOSSES[name][0]


def _check_name(name):
  if name not in LOSSES:
    raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")


def loss_fn(config: Mapping[str, Any]) -> Callable:
  """(embeddings, labels, class_params, where) -> (loss (B,), metrics)."""
  name = config["name"]
  _check_name(name)
  allowed = LOSSES[name][1]
  kwargs = {k: v for k, v in config.items() if k != "name"}
  unknown = sorted(set(kwargs) - set(allowed))
  if unknown:
    raise ValueError(f"loss {name!r} has no hyperparameter(s) {unknown};"
                     f" it takes: {', '.join(allowed) or 'none'}")

  def compute(embeddings, labels, params, where):
    if name == "cam":
      loss = losses.class_anchor_margin_loss(
          embeddings, labels, params["anchors"], where=where, **kwargs)
      terms = losses.class_anchor_margin_terms(
          jax.lax.stop_gradient(embeddings), labels,
          jax.lax.stop_gradient(params["anchors"]), where=where,
          **{k: v for k, v in kwargs.items() if k in ("margin", "min_norm")})
      return loss, terms
    if name == "ce":
      return losses.softmax_cross_entropy_loss(
          embeddings, labels, params["kernel"], params["bias"],
          where=where), {}
    if name == "center":
      return losses.center_loss(embeddings, labels, params["centers"],
                                params["kernel"], params["bias"],
                                where=where, **kwargs), {}
    if name == "arcface":
      return losses.arcface_loss(embeddings, labels, params["kernel"],
                                 where=where, **kwargs), {}
    if name == "proxy_anchor":
      return losses.proxy_anchor_loss(embeddings, labels, params["proxies"],
                                      where=where, **kwargs), {}
    if name == "contrastive":
      return losses.contrastive_loss(embeddings, labels, where=where,
                                     **kwargs), {}
    return losses.triplet_loss(embeddings, labels, where=where, **kwargs), {}

  return compute


def mean_over_valid(per_example: jax.Array, where: jax.Array) -> jax.Array:
  """The batch loss under the losses' contract: sum / number valid."""
  return jnp.sum(per_example) / jnp.maximum(jnp.sum(where), 1)
