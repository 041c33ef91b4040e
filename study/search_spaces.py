"""The hyperparameter search every loss gets (issue 14): the same number of
trials, the same optimizers and learning-rate ranges, and each loss's own
hyperparameters over a written-down range.

Trials are a Latin hypercube design, seeded, so the plan is the same on
every machine. The shared dimensions (optimizer, learning rate) are drawn
once and used by every loss: trial k of every loss has the same optimizer
and learning rate, and only the loss's own hyperparameters differ (a paired
design). Even trials use SGD, odd ones AdamW.
"""

import dataclasses
import math
import zlib
from typing import Any, Union

import numpy as np
from scipy.stats import qmc

TRIALS = 8


@dataclasses.dataclass(frozen=True)
class LogUniform:
  low: float
  high: float

  def at(self, u: float) -> float:
    return float(math.exp(math.log(self.low) + u * (
        math.log(self.high) - math.log(self.low))))

  def describe(self) -> str:
    return f"log-uniform [{self.low:g}, {self.high:g}]"


@dataclasses.dataclass(frozen=True)
class Uniform:
  low: float
  high: float

  def at(self, u: float) -> float:
    return float(self.low + u * (self.high - self.low))

  def describe(self) -> str:
    return f"uniform [{self.low:g}, {self.high:g}]"


@dataclasses.dataclass(frozen=True)
class Choice:
  values: tuple

  def at(self, u: float) -> Any:
    return self.values[min(int(u * len(self.values)), len(self.values) - 1)]

  def describe(self) -> str:
    return "one of " + ", ".join(map(str, self.values))


Dimension = Union[LogUniform, Uniform, Choice]

# Per optimizer: the settings every trial with it gets, and its learning
# rate range (weight decay as each optimizer is usually run: SGD's coupled
# L2 term, AdamW without decay as in the reference recipe).
OPTIMIZERS = {
    "sgd": ({"optim.name": "sgd", "optim.momentum": 0.9,
             "optim.nesterov": True, "optim.weight_decay": 5e-4},
            LogUniform(0.01, 0.3)),
    "adamw": ({"optim.name": "adamw", "optim.weight_decay": 0.0},
              LogUniform(3e-4, 3e-3)),
}

# Each loss's own hyperparameters (config fields) and their ranges.
# `optim.anchor_lr_mult` scales the learning rate of the per-class
# parameters (anchors, classifier rows, centers, proxies).
LOSS_SPACES: dict[str, dict[str, Dimension]] = {
    "cam": {"loss.margin": LogUniform(0.5, 8.0),
            "loss.min_norm": LogUniform(0.5, 8.0),
            "optim.anchor_lr_mult": LogUniform(1.0, 10.0)},
    "ce": {"optim.anchor_lr_mult": LogUniform(1.0, 10.0)},
    "center": {"loss.center_weight": LogUniform(1e-3, 1e-1),
               "optim.anchor_lr_mult": LogUniform(1.0, 10.0)},
    "arcface": {"loss.scale": LogUniform(16.0, 64.0),
                "loss.margin": Uniform(0.1, 0.5),
                "optim.anchor_lr_mult": LogUniform(1.0, 10.0)},
    "proxy_anchor": {"loss.scale": LogUniform(16.0, 64.0),
                     "loss.margin": Uniform(0.05, 0.2),
                     "optim.anchor_lr_mult": LogUniform(1.0, 100.0)},
    "contrastive": {"loss.negative_margin": Uniform(0.3, 1.2),
                    "loss.positive_margin": Uniform(0.0, 0.2)},
    "triplet": {"loss.margin": LogUniform(0.05, 0.5),
                "loss.mining": Choice(("semi_hard", "hard"))},
}


def _design(dims: int, trials: int, seed: int) -> np.ndarray:
  """(trials, dims) points in [0, 1), one per stratum in every dimension."""
  if dims == 0:
    return np.zeros((trials, 0))
  return qmc.LatinHypercube(d=dims, seed=seed).random(trials)


def shared_trials(trials: int = TRIALS) -> list[dict[str, Any]]:
  """The optimizer settings and learning rate of trials 0..trials-1, the
  same for every loss: even trials SGD, odd trials AdamW, learning rates
  stratified within each optimizer's range."""
  out: list[dict[str, Any]] = [{} for _ in range(trials)]
  for offset, name in enumerate(OPTIMIZERS):
    settings, lr = OPTIMIZERS[name]
    mine = list(range(offset, trials, len(OPTIMIZERS)))
    points = _design(1, len(mine), seed=1 + offset)
    for k, u in zip(mine, points[:, 0]):
      out[k] = {**settings, "optim.learning_rate": lr.at(u)}
  return out


def loss_trials(loss: str, trials: int = TRIALS) -> list[dict[str, Any]]:
  """Config overrides of `loss`'s trials: the shared ones plus its own
  hyperparameters, drawn with a seed derived from the loss's name."""
  space = LOSS_SPACES[loss]
  points = _design(len(space), trials, seed=zlib.crc32(loss.encode()))
  return [{**shared, **{field: dim.at(u)
                        for (field, dim), u in zip(space.items(), point)}}
          for shared, point in zip(shared_trials(trials), points)]


def describe() -> dict[str, Any]:
  """The search, as protocol.json and the report state it."""
  return {
      "trials_per_loss": TRIALS,
      "design": "Latin hypercube; trial k of every loss shares its optimizer"
                " and learning rate; even trials SGD, odd trials AdamW",
      "optimizers": {name: {"settings": settings,
                            "learning_rate": lr.describe()}
                     for name, (settings, lr) in OPTIMIZERS.items()},
      "losses": {loss: {field: dim.describe() for field, dim in space.items()}
                 for loss, space in LOSS_SPACES.items()},
  }
