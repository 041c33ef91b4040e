"""optax optimizers with per-parameter rules.

- Schedule: linear warm-up then cosine decay to 0 over the run.
- Per-class parameters (anchors, centers, proxies, classifier rows:
  `models.is_class_parameter`) get their own learning-rate multiplier
  (`anchor_lr_mult`) and no weight decay: decaying anchors towards the origin
  would fight the minimum-norm term.
- Weight decay applies to kernels only (not to biases or norm scales), as
  SGD's coupled L2 term or AdamW's decoupled decay.
- Optional global-norm gradient clipping.
"""

from typing import Any, Mapping

import jax
import optax

from ra_jax.models import is_class_parameter


def _is_class_param(path) -> bool:
  return is_class_parameter(tuple(getattr(p, "key", None) for p in path))


def parameter_groups(params) -> Any:
  """'class' for the head's per-class parameters, 'network' for the rest."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "class" if _is_class_param(path) else "network", params)


def decay_mask(params) -> Any:
  """True for parameters that get weight decay: network kernels (ndim > 1)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x.ndim > 1 and not _is_class_param(path), params)


def make_optimizer(config: Mapping[str, Any], total_steps: int,
                   params) -> optax.GradientTransformation:
  """The run's optimizer. `config`: name ("sgd" | "adamw"), learning_rate,
  anchor_lr_mult, weight_decay, warmup_steps, grad_clip (0 = off), momentum
  and nesterov (sgd), b1 and b2 (adamw)."""
  name = config["name"]
  if name not in ("sgd", "adamw"):
    raise ValueError(f"optim.name must be 'sgd' or 'adamw', got {name!r}")
  weight_decay = config.get("weight_decay", 0.0)

  def optimizer(learning_rate, decay):
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate,
        warmup_steps=min(config.get("warmup_steps", 0), max(total_steps - 1,
                                                            0)),
        decay_steps=max(total_steps, 1))
    if name == "sgd":
      sgd = optax.sgd(schedule, momentum=config.get("momentum", 0.9),
                      nesterov=config.get("nesterov", False))
      return optax.chain(optax.add_decayed_weights(weight_decay, decay_mask),
                         sgd) if decay else sgd
    return optax.adamw(schedule, b1=config.get("b1", 0.9),
                       b2=config.get("b2", 0.999),
                       weight_decay=weight_decay if decay else 0.0,
                       mask=decay_mask)

  lr = config["learning_rate"]
  groups = optax.multi_transform(
      {"network": optimizer(lr, decay=weight_decay > 0),
       "class": optimizer(lr * config.get("anchor_lr_mult", 1.0),
                          decay=False)},
      parameter_groups(params))
  clip = config.get("grad_clip", 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), groups) if clip else (
      groups)
