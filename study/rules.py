"""The protocol's decision rules, shared by the plan (`study.grid`: what
to run next) and the report (`study.report`: what was decided): which
variant of the focus loss is adopted, and when a training length has
converged."""

import statistics
from typing import Optional, Sequence

from ra_jax.training import writers

COMBINED = "combined"  # every single winning variant together
# The key of a diverged selection run's results.json (the error message),
# which it holds with "steps" instead of metrics: it ranks last.
DIVERGED = "diverged"


def variant_winners(table: dict[str, dict[int, float]]) -> list[str]:
  """The single variants (not "tuned", not COMBINED) better than "tuned" on
  every seed, best mean first. `table`: setting -> {seed: validation mAP}."""
  base = table.get("tuned")
  if not base:
    return []
  winners = [name for name, row in table.items()
             if name not in ("tuned", COMBINED) and set(row) == set(base)
             and all(row[s] > base[s] for s in base)]
  return sorted(winners, key=lambda n: -statistics.fmean(table[n].values()))


def adopted_variant(table: dict[str, dict[int, float]]) -> Optional[str]:
  """The focus loss's adopted variant (study/grid.py):
  None if no single variant beats the tuned setting on every seed; with one
  winner, it; with several, COMBINED if it beats the best single winner on
  every seed, else that winner. `table` must hold every seed of every
  setting the rule looks at."""
  winners = variant_winners(table)
  if len(winners) < 2:
    return winners[0] if winners else None
  best, combined = table[winners[0]], table[COMBINED]
  return COMBINED if all(combined[s] > best[s] for s in best) else winners[0]


def validation_curve(workdir: str) -> list[tuple[int, float]]:
  """(step, full validation mAP) of a run evaluated during training."""
  return [(r["step"], r["eval/map"]) for r in writers.read_metrics(workdir)
          if "eval/map" in r]


def last_quarter_gain(curve: Sequence[tuple[int, float]]
                      ) -> Optional[float]:
  """mAP at the last evaluation minus mAP at the evaluation nearest 3/4 of
  the last step; None with fewer than two evaluations."""
  if len(curve) < 2:
    return None
  last_step, last = curve[-1]
  _, earlier = min(curve, key=lambda p: abs(p[0] - 0.75 * last_step))
  return last - earlier


def converged(gain: Optional[float], threshold: float) -> bool:
  """A length run has converged: it gained less than `threshold` over its
  last quarter (a curve too short to tell has not)."""
  return gain is not None and gain < threshold


def final_length(gains: dict[int, Optional[float]], lengths: Sequence[int],
                 threshold: float) -> Optional[tuple[int, bool]]:
  """(epochs, converged): the final runs' length from the best baseline's
  finished length runs (`gains`: epochs -> gain over the last quarter).
  The shortest length at which it converged; else the longest of
  `lengths` once it has run there (the cap, converged False); None while
  neither holds."""
  for epochs in sorted(gains):
    if converged(gains[epochs], threshold):
      return epochs, True
  longest = max(lengths)
  return (longest, False) if longest in gains else None
