"""What each loss's selection cost, and the focus loss's extra round: the
selection budget per loss (runs and training steps, read from the files),
and the adopted variant's final runs against the headline finals, with the
gain per seed and the budget it took."""

import statistics

from ra_jax.report import runs as runs_lib
from ra_jax.report import significance

_map = runs_lib.exact_value
_title = runs_lib.loss_title


def _steps(run) -> int:
  return int(run.results.get("steps", 0))


def selection_budget(runs, protocol: dict) -> dict[str, dict[str, tuple]]:
  """loss -> {"tuning": (runs, steps), "variants": (runs, steps)}: the
  validation runs that selected each loss's settings."""
  out = {}
  for loss in protocol["search"]["losses"]:
    out[loss] = {}
    for stage in ("tuning", "variants"):
      members = [r for r in runs if r.stage == stage and r.loss == loss]
      out[loss][stage] = (len(members), sum(map(_steps, members)))
  return out


def budget_section(runs, protocol: dict) -> list[str]:
  """The selection budget per loss, and what the headline compares."""
  budget = selection_budget(runs, protocol)
  if not any(b["tuning"][0] for b in budget.values()):
    return []
  focus = protocol["focus"]
  lines = ["## Selection budget per loss", "",
           "Validation runs that selected each loss's settings (training"
           " steps summed; the length runs, shared by every loss, and the"
           " diagnosis, which selects nothing, are not counted).", "",
           "| loss | tuning trials | their steps | further selection runs |"
           " their steps | in the headline comparison |",
           "|---|---|---|---|---|---|"]
  for loss, stages in sorted(budget.items(), key=lambda kv: kv[0] != focus):
    (trials, trial_steps), (extra, extra_steps) = (stages["tuning"],
                                                   stages["variants"])
    lines.append(f"| {_title(loss)} | {trials} | {trial_steps:,} | {extra} |"
                 f" {extra_steps:,} | its best trial: {trials} runs,"
                 f" {trial_steps:,} steps |")
  extra, steps = budget[focus]["variants"]
  # Trials count, not steps: a trial that diverged stopped early.
  counts = {b["tuning"][0] for b in budget.values()}
  same = ("the same for every loss" if len(counts) == 1 else
          "not yet the same for every loss (the tuning has not finished)")
  lines += ["", f"The headline comparison (the final runs below) uses each"
            f" loss's best trial: a selection budget {same}."
            + (f" {runs_lib.loss_subject(focus)} had a further round of"
               f" {extra} variant runs ({steps:,} steps) that no other loss"
               " had; the variant it adopted is reported separately, with"
               " that budget (\"The adopted variant's final runs\")."
               if extra else ""), ""]
  return lines


def variant_finals_section(runs, protocol: dict) -> list[str]:
  """The adopted variant's final runs against the headline finals of the
  focus loss, seed by seed, for each final group."""
  focus = protocol["focus"]
  variant_runs = [r for r in runs if r.stage == "variant_final"]
  if not variant_runs:
    return []
  extra, steps = selection_budget(runs, protocol)[focus]["variants"]
  lines = ["## The adopted variant's final runs (outside the headline"
           " comparison)", "",
           f"{runs_lib.loss_subject(focus)} with the variant its extra"
           f" selection round adopted ({extra} runs, {steps:,} steps of"
           " validation training no other loss had), on the final protocol,"
           " against its headline runs (its best trial only).", "",
           "| group | seeds | headline mAP | with the variant | gain per seed"
           " | mean gain | p (t-test over seeds) |",
           "|---|---|---|---|---|---|---|"]
  for group in sorted({r.group for r in variant_runs},
                      key=lambda g: ("full" not in g, g)):
    headline_group = group.replace("variant_final/", "final/", 1)
    mine = {r.seed: r for r in variant_runs if r.group == group}
    base = {r.seed: r for r in runs if r.group == headline_group and
            r.loss == focus and r.stage == "final"}
    seeds = sorted(set(mine) & set(base))
    if not seeds:
      continue
    gains = [_map(mine[s]) - _map(base[s]) for s in seeds]
    test = significance.paired_t_test(gains)
    lines.append(
        f"| {headline_group} | {len(seeds)} |"
        f" {statistics.fmean(_map(base[s]) for s in seeds):.4f} |"
        f" {statistics.fmean(_map(mine[s]) for s in seeds):.4f} |"
        f" {', '.join(f'{g:+.4f}' for g in gains)} |"
        f" {statistics.fmean(gains):+.4f} |"
        f" {'-' if test is None else f'{test.p_value:.4f}'} |")
  return lines + [""]
