"""The verdict across settings (issue 30): for every (dataset, backbone)
setting whose results hold final runs, the focus loss against the best
baseline of each final group, and two-stage search with one label list
against its controls, in one table at the top of docs/RESULTS.md.

The verdict word, exactly: over the seeds both losses have (every mean in
the row is over those seeds), "wins" when
the focus loss's mean mAP is higher than the best baseline's (the other
loss with the highest mean mAP) and the paired t-test over seeds gives
p < 0.05, "loses" when it is lower with p < 0.05, "ties" otherwise; with
fewer seeds than the protocol plans it is "provisional" (one seed: no
test). The bootstrap over queries is shown beside it, not used: it
measures query sampling, not training randomness.
"""

import dataclasses
import math
import statistics
from typing import Optional, Sequence

from ra_jax import retrieval
from ra_jax.report import comparison
from ra_jax.report import runs as runs_lib
from ra_jax.report import significance

_map = runs_lib.exact_value
_title = runs_lib.loss_title
ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class GroupVerdict:
  """The focus loss against the best baseline in one final group."""
  group: str
  seeds: int  # seeds both losses have
  planned: int  # seeds the protocol plans
  focus_map: float
  baseline: str
  baseline_map: float
  seed_p: Optional[float]  # paired t-test over seeds
  query_p: Optional[float]  # paired bootstrap over queries
  # Two-stage search with one label list, the focus loss's full-ranking
  # mAP with stage 1 by its own class vectors and by the database's class
  # centroids, and the best of any other loss by either (NaN: not run).
  two_stage: float
  two_stage_centroids: float
  two_stage_other: float

  @property
  def word(self) -> str:
    if self.seeds < self.planned:
      return "provisional"
    if self.seed_p is None or self.seed_p >= ALPHA:
      return "ties"
    return "wins" if self.focus_map > self.baseline_map else "loses"


def group_verdict(runs: Sequence[runs_lib.RunRecord], group: str,
                  focus: str, planned: int, tests=None
                  ) -> Optional[GroupVerdict]:
  """`focus` against the best other loss of `group`; None until `group`
  has the focus loss and another loss on a common seed. `tests`:
  `comparison.paired_tests(runs, group, focus)` if already computed."""
  tests = comparison.paired_tests(runs, group, focus) if tests is None else (
      tests)
  if not tests:
    return None
  by_loss = comparison._by_loss(runs, group)
  best = comparison.best_baseline({loss: by_loss[loss] for loss in tests},
                                  focus)
  per_seed, query_test = tests[best]
  seed_test = significance.paired_t_test(per_seed)
  seeds = len(per_seed)
  # Every mean over the seeds the focus loss and the best baseline share,
  # as the test is: while seeds are missing, a loss with more of them
  # would otherwise be averaged over other seeds than its rival.
  shared = ({r.seed for r in by_loss[focus]} &
            {r.seed for r in by_loss[best]})
  by_loss = {loss: [r for r in members if r.seed in shared]
             for loss, members in by_loss.items()}
  mine = by_loss[focus]

  def mean_map(members) -> float:
    return statistics.fmean(map(_map, members))

  def one_list(members, vectors) -> float:
    return comparison.mean_search_value(members, "labels", 1, "map", vectors)

  others = [one_list(members, vectors)
            for loss, members in by_loss.items() if loss != focus and members
            for vectors in (retrieval.LEARNED, retrieval.CENTROIDS)]
  others = [v for v in others if not math.isnan(v)]
  return GroupVerdict(
      group=group, seeds=seeds, planned=planned, focus_map=mean_map(mine),
      baseline=best, baseline_map=mean_map(by_loss[best]),
      seed_p=None if seed_test is None else seed_test.p_value,
      query_p=None if query_test is None else query_test.p_value,
      two_stage=one_list(mine, retrieval.LEARNED),
      two_stage_centroids=one_list(mine, retrieval.CENTROIDS),
      two_stage_other=max(others) if others else math.nan)


def setting_verdicts(runs, protocol: dict, tests: dict
                     ) -> list[GroupVerdict]:
  """Every final group of one setting's runs, full set first."""
  groups = sorted({r.group for r in runs if r.group.startswith("final/")},
                  key=lambda g: ("full" not in g, g))
  planned = len(protocol.get("final_seeds", ()))
  verdicts = [group_verdict(runs, group, protocol["focus"], planned,
                            tests.get(group)) for group in groups]
  return [v for v in verdicts if v is not None]


def _p(value: Optional[float]) -> str:
  return "-" if value is None else f"{value:.4f}"


def _value(value: float) -> str:
  return "-" if math.isnan(value) else f"{value:.4f}"


def across_section(settings: Sequence[tuple[str, str, str,
                                            list[GroupVerdict]]],
                   focus: str) -> list[str]:
  """The table across settings. `settings`: (title, report link, status,
  verdicts) per setting; a setting without final groups shows its
  status."""
  subject = runs_lib.loss_subject(focus)
  lines = [
      "## Across settings", "",
      f"{subject} against the best baseline of each setting's final runs"
      " (mean test mAP over seeds; the verdict: higher or lower with the"
      f" paired t-test over seeds at p < {ALPHA}, else a tie; provisional"
      " until every planned seed has run). Two-stage: full-ranking mAP with"
      " one label list, stage 1 by the focus loss's anchors, by the"
      " database's class centroids (the control), and the best any other"
      " loss reaches with either.", "",
      "| setting | group | seeds | focus mAP | best baseline | its mAP |"
      " t-test p (seeds) | bootstrap p (queries) | verdict | two-stage:"
      " anchors | centroids | best other loss |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for title, link, status, verdicts in settings:
    name = f"[{title}]({link})" if link else title
    if not verdicts:
      lines.append(f"| {name} | - | - | - | - | - | - | - | {status} | - |"
                   " - | - |")
      continue
    for v in verdicts:
      lines.append(
          f"| {name} | {v.group} | {v.seeds} of {v.planned} |"
          f" {v.focus_map:.4f} | {_title(v.baseline)} |"
          f" {v.baseline_map:.4f} | {_p(v.seed_p)} | {_p(v.query_p)} |"
          f" **{v.word}** | {_value(v.two_stage)} |"
          f" {_value(v.two_stage_centroids)} | {_value(v.two_stage_other)} |")
  return lines + [""]
