"""The study's verdicts on its final test runs: the protocol's targets and
the answer that leads the report (who wins each final group, with the
significance tests of `ra_jax.report.comparison`, two-stage search with one
list, the targets). The subject is the protocol's focus loss."""

import math
import statistics

from ra_jax import retrieval
from ra_jax.report import comparison
from ra_jax.report import runs as runs_lib

_map = runs_lib.exact_value  # a run's exact mAP (or another metric)
_title = runs_lib.loss_title


def target_rows(runs, protocol: dict, group: str
                ) -> list[tuple[str, str, float, float, str]]:
  """The protocol's targets (`targets` in protocol.json, for the group it
  names) against the means over seeds of `group`: the best baseline's (by
  mean mAP) and the focus loss's exact mAP and P@10, and its two-stage
  search with one label list (full-ranking mAP, share of exact search's
  distances). Rows (what, ">=" or "<=", target, measured, met)."""
  targets = protocol.get("targets") or {}
  focus = protocol["focus"]
  by_loss = comparison._by_loss(runs, group)
  if targets.get("group") != group or focus not in by_loss or len(
      by_loss) < 2:
    return []
  best = comparison.best_baseline(by_loss, focus)
  rows = []
  for who, loss in (("best_baseline", best), ("focus", focus)):
    for metric, title in (("map", "mAP"), ("precision@10", "P@10")):
      if metric in targets.get(who, {}):
        rows.append((f"{_title(loss)}, exact search, {title}", ">=",
                     targets[who][metric],
                     statistics.fmean(_map(r, metric)
                                      for r in by_loss[loss])))
  for metric, title, sign in (
      ("map", "full-ranking mAP", ">="),
      ("distance_fraction", "distances per query, share of exact", "<=")):
    if metric in targets.get("focus_two_stage_1", {}):
      rows.append((f"{_title(focus)}, two-stage with 1 label list, {title}",
                   sign, targets["focus_two_stage_1"][metric],
                   comparison.mean_search_value(by_loss[focus], "labels", 1,
                                                metric)))
  judged = []
  for what, sign, goal, value in rows:
    shown = round(value, 4)  # judged as printed: no float-sum verdicts
    if math.isnan(value):
      met = "not measured"
    elif (shown >= goal) if sign == ">=" else (shown <= goal):
      met = "yes"
    else:
      met = f"no, by {abs(value - goal):.4f}"
    judged.append((what, sign, goal, value, met))
  return judged


def targets_section(runs, protocol: dict, group: str) -> list[str]:
  """`target_rows` as a table."""
  rows = target_rows(runs, protocol, group)
  if not rows:
    return []
  return [f"### Targets ({group}, mean over seeds)", "",
          "| what | target | measured | met |", "|---|---|---|---|"] + [
              f"| {what} | {sign} {goal} | {value:.4f} | {met} |"
              for what, sign, goal, value, met in rows] + [""]


def _best_two_stage(runs, focus: str) -> str:
  """" Of the other losses, ... ": the best one-label-list two-stage mAP
  of final/full among the other losses, by their own vectors or the
  centroids."""
  best = None
  by_loss = comparison._by_loss(runs, "final/full")
  for loss, members in by_loss.items():
    if loss == focus:
      continue
    for vectors in (retrieval.LEARNED, retrieval.CENTROIDS):
      value = comparison.mean_search_value(members, "labels", 1, "map",
                                           vectors)
      if not math.isnan(value) and (best is None or value > best[2]):
        best = (loss, vectors, value)
  if best is None:
    return ""
  loss, vectors, value = best
  by = ("its own class vectors" if vectors == retrieval.LEARNED else
        "the database's centroids")
  return (f" Of the other losses, {_title(loss)} reaches the most with one"
          f" label list: {value:.4f}, stage 1 by {by}.")


def answer_section(runs, summaries: dict[str, list[runs_lib.Summary]],
                   protocol: dict, tests: dict[str, dict]) -> list[str]:
  """The report's answer up front, from the final groups: who wins each,
  with the significance, two-stage search with one list, the targets.
  `tests`: group -> `comparison.paired_tests(common, group, focus)`, with
  `common = comparison.on_common_seeds(runs)` (the bootstraps are the
  report's slowest part). Rankings, means and tests are on the seeds every
  loss of a group has (all of them once every planned seed has run), the
  seed counts on all of `runs`."""
  focus = protocol["focus"]
  common = comparison.on_common_seeds(runs)
  common_summaries = runs_lib.summarise(common)
  groups = sorted((g for g in summaries if g.startswith("final/")),
                  key=lambda g: ("full" not in g, g))
  if not groups:
    return []
  lines = ["## The answer", "",
           "From the final runs: test queries against the training split,"
           " full ranking, each loss with its validation-selected settings,"
           " in the geometry it declares. Details in the sections below.",
           ""]
  planned = len(protocol.get("final_seeds", ()))
  tuned = {r.loss for r in runs if r.stage == "tuning"}
  for group in groups:
    seeds = sorted({len(row.seeds) for row in summaries[group]})
    losses = {row.loss for row in summaries[group]}
    done = (not planned or seeds == [planned]) and tuned <= losses
    rows = common_summaries.get(group, [])
    shared = sorted(rows[0].seeds) if rows else []
    parts = [runs_lib.verdict(rows, focus),
             comparison.significance_sentence(common, group, focus,
                                              tests.get(group))]
    if not shared:
      compared = "; no seed that every loss has yet"
    elif set(shared) == {s for row in summaries[group] for s in row.seeds}:
      compared = ""
    else:
      compared = (f"; compared on seed{'s' if len(shared) > 1 else ''} "
                  + ", ".join(map(str, shared)) + ", which every loss has")
    lines.append(f"- **{group}** ({len(losses)}"
                 + (f" of {len(tuned)}" if tuned else "") + " losses, "
                 + (f"{seeds[0]}" if len(seeds) == 1
                    else f"{seeds[0]} to {seeds[-1]}")
                 + (f" of {planned}" if planned else "") + " seeds each"
                 + ("" if done else ", not finished") + compared + "): "
                 + (" ".join(p for p in parts if p) or
                    "no comparison yet: it needs a second loss's runs."))
  with_lists = [r for r in common
                if r.group == "final/full" and r.loss == focus
                and comparison.search_row(r, "labels", 1) is not None]
  if with_lists:
    mean = lambda source, key, vectors=retrieval.LEARNED: (
        comparison.mean_search_value(with_lists, source, 1, key, vectors))
    anchors = mean("anchors", "map")
    centroids = mean("labels", "map", retrieval.CENTROIDS)
    lines.append(
        f"- Two-stage search (final/full, {_title(focus)}): one label"
        f" list gives full-ranking mAP {mean('labels', 'map'):.4f} against"
        f" exact search's {statistics.fmean(map(_map, with_lists)):.4f},"
        f" computing {mean('labels', 'distance_fraction'):.4f} of its"
        " distances" + ("" if math.isnan(anchors) else
                        "; one anchor list (no database labels needed)"
                        f" {anchors:.4f}")
        + ("" if math.isnan(centroids) else
           "; stage 1 by the database's class centroids instead of the"
           f" anchors {centroids:.4f}") + "." + _best_two_stage(
               common, focus))
  rows = target_rows(runs, protocol, protocol.get("targets", {}).get(
      "group", ""))
  if rows:
    missed = [f"{what} {value:.4f} against {sign} {goal}"
              for what, sign, goal, value, met in rows if met != "yes"]
    lines.append(f"- Targets: {len(rows) - len(missed)} of {len(rows)} met"
                 + (f"; not met: {'; '.join(missed)}." if missed else "."))
  return lines + [""]
