"""The hyperparameter searches the losses get (issues 14 and 30): within a
setting, the same number of trials for every loss, the same optimizers and
learning-rate ranges, and each loss's own hyperparameters over a
written-down range (or carried over from another setting's selection).

Trials are a Latin hypercube design, seeded, so the plan is the same on
every machine. The shared dimensions (optimizer, learning rate, and any
`Search.shared` such as gradient clipping) are drawn once and used by every
loss: trial k of every loss has the same optimizer and learning rate, and
only the loss's own hyperparameters differ (a paired design). Even trials
use SGD, odd ones AdamW.
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


_TITLES = {"sgd": "SGD", "adamw": "AdamW"}


def _design(dims: int, trials: int, seed: int) -> np.ndarray:
  """(trials, dims) points in [0, 1), one per stratum in every dimension."""
  if dims == 0:
    return np.zeros((trials, 0))
  return qmc.LatinHypercube(d=dims, seed=seed).random(trials)


@dataclasses.dataclass(frozen=True)
class Search:
  """A search every loss of a setting gets: `trials` trials per loss,
  trial k of every loss sharing its optimizer settings (even trials the
  first optimizer, odd ones the second, ...), its learning rate and the
  `shared` dimensions; `losses`: the losses searched, each with the ranges
  of its own hyperparameters (an empty space: they are carried over from
  another setting's selection, study/grid.py)."""
  trials: int
  losses: dict[str, dict[str, Dimension]]
  optimizers: dict[str, tuple[dict[str, Any], Dimension]] = (
      dataclasses.field(default_factory=lambda: dict(OPTIMIZERS)))
  shared: dict[str, Dimension] = dataclasses.field(default_factory=dict)
  carried_from: str = ""  # where the losses' own values come from, if so

  def shared_trials(self) -> list[dict[str, Any]]:
    """The optimizer settings, learning rate and shared dimensions of
    trials 0..trials-1, the same for every loss; within each optimizer the
    learning rate (and each shared dimension) is stratified."""
    out: list[dict[str, Any]] = [{} for _ in range(self.trials)]
    for offset, name in enumerate(self.optimizers):
      settings, lr = self.optimizers[name]
      mine = list(range(offset, self.trials, len(self.optimizers)))
      points = _design(1 + len(self.shared), len(mine), seed=1 + offset)
      for k, point in zip(mine, points):
        out[k] = {**settings, "optim.learning_rate": lr.at(point[0]),
                  **{field: dim.at(u) for (field, dim), u in zip(
                      self.shared.items(), point[1:])}}
    return out

  def loss_trials(self, loss: str) -> list[dict[str, Any]]:
    """Config overrides of `loss`'s trials: the shared ones plus its own
    hyperparameters, drawn with a seed derived from the loss's name."""
    space = self.losses[loss]
    points = _design(len(space), self.trials, seed=zlib.crc32(loss.encode()))
    return [{**shared, **{field: dim.at(u)
                          for (field, dim), u in zip(space.items(), point)}}
            for shared, point in zip(self.shared_trials(), points)]

  def describe(self) -> dict[str, Any]:
    """The search, as protocol.json and the report state it."""
    names = [_TITLES.get(name, name) for name in self.optimizers]
    order = (f"even trials {names[0]}, odd trials {names[1]}"
             if len(names) == 2 else "trials go through " + ", ".join(names))
    out = {
        "trials_per_loss": self.trials,
        "design": "Latin hypercube; trial k of every loss shares its"
                  " optimizer and learning rate" + "".join(
                      f" and {field}" for field in self.shared)
                  + f"; {order}",
        "optimizers": {name: {"settings": settings,
                              "learning_rate": lr.describe()}
                       for name, (settings, lr) in self.optimizers.items()},
        "losses": {loss: {field: dim.describe()
                          for field, dim in space.items()}
                   for loss, space in self.losses.items()},
    }
    if self.shared:
      out["shared"] = {field: dim.describe()
                       for field, dim in self.shared.items()}
    if self.carried_from:
      out["carried_from"] = self.carried_from
    return out


# Fashion-MNIST with the ResNet (issue 14): every loss, its own
# hyperparameters searched.
FASHION = Search(trials=TRIALS, losses=LOSS_SPACES)
