"""The report's sections for a staged results grid (benchmarks/grid.py: runs
whose grid.json names a stage): the protocol and search spaces, the tuning
on the validation split, the class anchor margin loss's variants, the
training length, the final test runs with significance, and the ablation.

Everything is read from the run files and `protocol.json` at the root; a
stage that has not run yet is reported as missing, not skipped silently.
"""

import math
import re
import statistics
import warnings
from typing import Any, Optional, Sequence

import numpy as np

from ra_jax import files
from ra_jax.report import runs as runs_lib
from ra_jax.report import significance

OURS = "cam"
_map = runs_lib.exact_value  # a run's exact mAP (or another metric)
STAGE_ORDER = ("tuning", "variants", "length", "final", "ablation",
               "diagnosis")


def read_protocol(root: str) -> Optional[dict]:
  path = files.join(root, "protocol.json")
  return files.read_json(path) if files.exists(path) else None


def _title(loss: str) -> str:
  return runs_lib.loss_name({"name": loss})


def _settings_text(settings: dict[str, Any]) -> str:
  """The trial's own settings, short: "adamw lr 0.0012, margin 2.93"."""
  parts = [str(settings.get("optim.name", ""))]
  for field, value in settings.items():
    if field in ("optim.name", "optim.momentum", "optim.nesterov",
                 "optim.weight_decay") or field.startswith(("dataset.",
                                                            "train.",
                                                            "eval.")):
      continue
    name = {"optim.learning_rate": "lr",
            "optim.anchor_lr_mult": "class-param lr x"}.get(
                field, field.split(".")[-1])
    parts.append(f"{name} {value:.3g}" if isinstance(value, float) else
                 f"{name} {value}")
  return ", ".join(p for p in parts if p)


def protocol_section(protocol: Optional[dict]) -> list[str]:
  if protocol is None:
    return []
  recipe = protocol["recipe"]
  search = protocol["search"]
  lines = [
      "## Protocol", "",
      "- Recipe shared by every loss (the tuning trials then set the"
      " optimizer, learning rate and their own length): " + ", ".join(
          f"{k} {v}" for k, v in recipe.items()) + ".",
      "- Model selection on validation:"
      f" {protocol['validation'].get('dataset.validation_examples')}"
      " training images held out (stratified, seed"
      f" {protocol['validation'].get('dataset.validation_seed')}) as the"
      " queries, the rest as training data and database; the test split is"
      " used by the final runs only.",
      f"- Tuning: {search['trials_per_loss']} trials per loss,"
      f" {protocol['tuning_epochs']} epochs each; {search['design']}.",
      "", "Search spaces (the same trial budget for every loss):", "",
      "| loss | its own hyperparameters |", "|---|---|"]
  optimizers = "; ".join(
      f"{name}: learning rate {spec['learning_rate']}, " + ", ".join(
          f"{k.split('.')[-1]} {v}" for k, v in spec["settings"].items()
          if k != "optim.name")
      for name, spec in search["optimizers"].items())
  for loss, space in search["losses"].items():
    lines.append(f"| {_title(loss)} | " + "; ".join(
        f"{k} {v}" for k, v in space.items()) + " |")
  lines += ["", f"Optimizers, shared by every loss: {optimizers}.", ""]
  return lines


def tuning_section(runs: Sequence[runs_lib.RunRecord],
                   protocol: Optional[dict]) -> list[str]:
  tuning = [r for r in runs if r.stage == "tuning"]
  if not tuning:
    return []
  budget = protocol["search"]["trials_per_loss"] if protocol else None
  by_loss: dict[str, list] = {}
  for run in tuning:
    by_loss.setdefault(run.loss, []).append(run)
  lines = ["## Tuning on the validation split", "",
           "Validation mAP (10,000 held-out training images against the"
           " other 50,000, full ranking) of every trial; each loss in its"
           " declared geometry.", "",
           "| loss | geometry | trials | best mAP | its P@10 | median mAP |"
           " worst mAP | best trial's settings |",
           "|---|---|---|---|---|---|---|---|"]
  best = {}
  for loss, members in sorted(by_loss.items(),
                              key=lambda kv: -max(map(_map, kv[1]))):
    top = max(members, key=_map)
    best[loss] = top
    values = [_map(r) for r in members]
    lines.append(
        f"| {_title(loss)} | {top.config['loss'].get('geometry', '?')} |"
        f" {len(members)}{f' of {budget}' if budget else ''} |"
        f" {_map(top):.4f} | {_map(top, 'precision@10'):.4f} |"
        f" {statistics.median(values):.4f} | {min(values):.4f} |"
        f" {top.variant}: {_settings_text(top.grid.get('settings', {}))} |")
  lines.append("")
  counts = {len(m) for m in by_loss.values()}
  if budget and (counts != {budget} or len(by_loss) < len(
      protocol["search"]["losses"])):
    lines += [f"The search is not finished: {sum(map(len, by_loss.values()))}"
              f" of {budget * len(protocol['search']['losses'])} trials"
              " have run; the ranking below is provisional.", ""]
  ranked = sorted(best, key=lambda loss: -_map(best[loss]))
  if OURS in best and len(ranked) > 1:
    rank = ranked.index(OURS) + 1
    leader = ranked[0] if ranked[0] != OURS else ranked[1]
    gap = _map(best[OURS]) - _map(best[leader])
    lines += [f"At its best trial the class anchor margin loss ranks {rank}"
              f" of {len(ranked)} on validation ({_map(best[OURS]):.4f},"
              f" {gap:+.4f} against {_title(leader)},"
              f" {_map(best[leader]):.4f}).", ""]
  return lines


COMBINED = "combined"  # every single winning variant together


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
  """The class anchor margin loss's adopted variant (benchmarks/grid.py):
  None if no single variant beats the tuned setting on every seed; with one
  winner, it; with several, COMBINED if it beats the best single winner on
  every seed, else that winner. `table` must hold every seed of every
  setting the rule looks at."""
  winners = variant_winners(table)
  if len(winners) < 2:
    return winners[0] if winners else None
  best, combined = table[winners[0]], table[COMBINED]
  return COMBINED if all(combined[s] > best[s] for s in best) else winners[0]


def variants_section(runs, protocol) -> list[str]:
  variants = [r for r in runs if r.stage == "variants"]
  if not variants:
    return []
  tuned = max((r for r in runs if r.stage == "tuning" and r.loss == OURS),
              key=_map, default=None)
  table: dict[str, dict[int, float]] = {}
  if tuned is not None:
    table["tuned"] = {0: _map(tuned)}
  for run in variants:
    table.setdefault(run.variant, {})[run.seed] = _map(run)
  seeds = sorted({s for row in table.values() for s in row})
  text = (protocol or {}).get("variants", {})
  lines = ["## The class anchor margin loss's variants (validation)", "",
           "| setting | " + " | ".join(f"seed {s}" for s in seeds) +
           " | mean | what it changes |", "|---|" + "---|" * (len(seeds) + 2)]
  for name, row in table.items():
    cells = [f"{row[s]:.4f}" if s in row else "-" for s in seeds]
    mean = statistics.fmean(row.values())
    what = ("the best tuning trial (seed 0 is that trial)"
            if name == "tuned" else text.get(name, "-"))
    lines.append(f"| {name} | " + " | ".join(cells) +
                 f" | {mean:.4f} | {what} |")
  missing = [name for name in text if name not in table and
             (name != COMBINED or len(variant_winners(table)) > 1)]
  for name in missing:
    lines.append(f"| {name} | " + " | ".join("-" for _ in seeds) +
                 f" | - | {text[name]} (not run yet) |")
  complete = not missing and all(set(row) == set(seeds)
                                 for row in table.values())
  lines += ["", "The tuned setting's seed 0 is the best of its 8 trials, so"
            " it is biased upwards; a variant must beat it there too."]
  if not complete:
    return lines + ["", "Not every setting has every seed yet.", ""]
  winners, adopted = variant_winners(table), adopted_variant(table)
  if adopted is None:
    return lines + ["", "No variant beats the tuned setting on every seed;"
                    " none is adopted.", ""]
  if adopted == COMBINED:
    why = (f" ({' + '.join(winners)}, better than {winners[0]} alone on"
           " every seed).")
  elif len(winners) > 1:
    why = (f" ({COMBINED}, all of them together, was not better than it on"
           " every seed).")
  else:
    why = "."
  return lines + ["", "Better than the tuned setting on every seed:"
                  f" {', '.join(winners)}. Adopted: {adopted}{why}", ""]


def length_section(runs, protocol, figure_dir: str, rel: str) -> list[str]:
  length = [r for r in runs if r.stage == "length"]
  if not length:
    return []
  from ra_jax.report import figures
  curves = {}
  lines = ["## Training length (validation)", "",
           "| loss | epochs | final validation mAP | gain over the last"
           " quarter |", "|---|---|---|---|"]
  threshold = (protocol or {}).get("converged_gain", 0.01)
  baseline_converged = {}  # epochs -> loss, for the baseline's lengths

  def epochs_of(run) -> int:
    return int(run.variant.removeprefix("epochs"))  # grid path .../epochsN

  for run in sorted(length, key=lambda r: (r.loss, epochs_of(r))):
    curve = validation_curve(run.workdir)
    epochs = epochs_of(run)
    curves[f"{_title(run.loss)}, {epochs} epochs"] = curve
    gain = last_quarter_gain(curve)
    converged = gain is not None and gain < threshold
    state = "converged" if converged else "still rising"
    if converged and run.loss != OURS:
      baseline_converged.setdefault(epochs, run.loss)
    lines.append(f"| {_title(run.loss)} | {epochs} | {_map(run):.4f} |"
                 + (f" {gain:+.4f} ({state}) |" if gain is not None else
                    " - |"))
  figures.validation_curves(files.join(figure_dir, "length_curves.png"),
                            curves)
  lines += ["", f"Converged = the gain over the last quarter is below"
            f" {threshold}. The rule is on the best baseline: "
            + (f"the final runs train {min(baseline_converged)} epochs, the"
               " shortest length at which"
               f" {_title(baseline_converged[min(baseline_converged)])}"
               " converged." if baseline_converged else
               "it has not converged at any length run so far."), "",
            f"![validation mAP during training]({rel}/length_curves.png)", ""]
  return lines


def validation_curve(workdir: str) -> list[tuple[int, float]]:
  """(step, full validation mAP) of a run evaluated during training."""
  from ra_jax.training import writers
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


def _by_loss(runs: Sequence[runs_lib.RunRecord], group: str
             ) -> dict[str, list[runs_lib.RunRecord]]:
  """The runs of `group`, by loss."""
  by_loss: dict[str, list] = {}
  for run in runs:
    if run.group == group:
      by_loss.setdefault(run.loss, []).append(run)
  return by_loss


def _best_baseline(by_loss: dict[str, list[runs_lib.RunRecord]]) -> str:
  """The loss other than ours with the best mean exact mAP over its runs."""
  return max((loss for loss in by_loss if loss != OURS),
             key=lambda loss: statistics.fmean(map(_map, by_loss[loss])))


def paired_tests(runs: Sequence[runs_lib.RunRecord], group: str
                 ) -> dict[str, tuple[list[float],
                                      Optional[significance.PairedTest]]]:
  """Per baseline of `group`: the class anchor margin loss's mAP minus the
  baseline's on each seed both have, and a paired bootstrap over queries
  of per-query AP averaged over those seeds (None without per-query APs)."""
  by_loss = _by_loss(runs, group)
  ours = {r.seed: r for r in by_loss.pop(OURS, [])}
  out = {}
  for loss, others in sorted(by_loss.items()):
    theirs = {r.seed: r for r in others}
    seeds = sorted(set(ours) & set(theirs))
    if not seeds:
      continue
    per_seed = [_map(ours[s]) - _map(theirs[s]) for s in seeds]
    test = None
    if all("per_query_ap" in ours[s].results and
           "per_query_ap" in theirs[s].results for s in seeds):
      with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN queries
        a = np.nanmean([_per_query(ours[s]) for s in seeds], axis=0)
        b = np.nanmean([_per_query(theirs[s]) for s in seeds], axis=0)
      test = significance.paired_bootstrap(a, b)
    out[loss] = (per_seed, test)
  return out


def significance_sentence(runs: Sequence[runs_lib.RunRecord], group: str,
                          tests=None) -> Optional[str]:
  """The class anchor margin loss against the best baseline of `group` (by
  mean mAP): mean and per-seed mAP differences, the bootstrap over queries,
  the t-test over seeds, and whether each is significant at 5 %."""
  tests = paired_tests(runs, group) if tests is None else tests
  if not tests:
    return None
  by_loss = _by_loss(runs, group)
  best = _best_baseline({loss: by_loss[loss] for loss in tests})
  per_seed, test = tests[best]
  sentence = (f"Significance against the best baseline, {_title(best)}:"
              f" mean mAP difference {statistics.fmean(per_seed):+.4f}, per"
              f" seed {', '.join(f'{d:+.4f}' for d in per_seed)}")
  verdicts = []
  if test is not None:
    sentence += (f"; paired bootstrap over {test.num_queries} queries: 95%"
                 f" interval [{test.low:+.4f}, {test.high:+.4f}], p ="
                 f" {test.p_value:.4f}")
    verdicts.append(("over queries", test.p_value))
  else:
    sentence += " (no per-query APs: no bootstrap)"
  seed_test = significance.paired_t_test(per_seed)
  if seed_test is not None:
    sentence += (f"; paired t-test over the {seed_test.num_seeds} seeds:"
                 f" t = {seed_test.t:.2f}, p = {seed_test.p_value:.4f}")
    verdicts.append(("over seeds", seed_test.p_value))
  return sentence + "".join(
      f"{', so the difference is' if k == 0 else ', and'}"
      f" {'' if p < 0.05 else 'not '}significant at the 5% level {where}"
      for k, (where, p) in enumerate(verdicts)) + (
          " (one seed: no test over seeds yet)." if seed_test is None
          else ".")


def final_significance(runs: Sequence[runs_lib.RunRecord], group: str,
                       tests=None) -> list[str]:
  """The verdict's significance against the best baseline (by mean mAP),
  then a table against every baseline: mean mAP difference, paired
  bootstrap over queries, per-seed differences, t-test over seeds.
  `tests`: `paired_tests(runs, group)` if already computed."""
  tests = paired_tests(runs, group) if tests is None else tests
  if not tests:
    return []
  sentence = significance_sentence(runs, group, tests)
  lines = [sentence, "",
           "| against | mAP difference (mean over seeds) | 95% bootstrap"
           " interval (queries) | p (bootstrap) | per-seed differences |"
           " p (t-test over seeds) |", "|---|---|---|---|---|---|"]
  for loss, (per_seed, test) in tests.items():
    cells = (["-", "-"] if test is None else
             [f"[{test.low:+.4f}, {test.high:+.4f}]", f"{test.p_value:.4f}"])
    seed_test = significance.paired_t_test(per_seed)
    lines.append(f"| {_title(loss)} | {statistics.fmean(per_seed):+.4f} | "
                 + " | ".join(cells) + " | " +
                 ", ".join(f"{d:+.4f}" for d in per_seed) + " | "
                 + ("-" if seed_test is None else f"{seed_test.p_value:.4f}")
                 + " |")
  return lines + ["", "Paired over the same queries: the bootstrap resamples"
                  " queries (10,000 times) and recomputes the mean"
                  " difference of per-query AP averaged over seeds; p is the"
                  " two-sided share of resamples on the other side of 0."
                  " It holds the trained models fixed; the t-test over"
                  " seeds (Student's, on the per-seed mAP differences) is"
                  " the one that sees training's own variance.", ""]


def _mean_result(runs, key: str, metric: str) -> float:
  """Mean of results[key][metric] over the runs that have it; NaN if none
  ("two_stage_1", "map": two-stage search with one label list)."""
  values = [r.results[key][metric] for r in runs
            if metric in r.results.get(key, {})]
  return statistics.fmean(values) if values else math.nan


def _per_query(run) -> np.ndarray:
  return np.asarray([math.nan if v is None else v
                     for v in run.results["per_query_ap"]], np.float64)


def target_rows(runs, protocol: Optional[dict], group: str
                ) -> list[tuple[str, str, float, float, str]]:
  """The protocol's targets (`targets` in protocol.json, for the group it
  names) against the means over seeds of `group`: the best baseline's (by
  mean mAP) and the class anchor margin loss's exact mAP and P@10, and its
  two-stage search with one label list (full-ranking mAP, share of exact
  search's distances). Rows (what, ">=" or "<=", target, measured, met)."""
  targets = (protocol or {}).get("targets") or {}
  by_loss = _by_loss(runs, group)
  if targets.get("group") != group or OURS not in by_loss or len(
      by_loss) < 2:
    return []

  best = _best_baseline(by_loss)
  rows = []
  for who, loss in (("best_baseline", best), ("cam", OURS)):
    for metric, title in (("map", "mAP"), ("precision@10", "P@10")):
      if metric in targets.get(who, {}):
        rows.append((f"{_title(loss)}, exact search, {title}", ">=",
                     targets[who][metric],
                     statistics.fmean(_map(r, metric)
                                      for r in by_loss[loss])))
  for metric, title, sign in (
      ("map", "full-ranking mAP", ">="),
      ("distance_fraction", "distances per query, share of exact", "<=")):
    if metric in targets.get("cam_two_stage_1", {}):
      rows.append((f"{_title(OURS)}, two-stage with 1 label list, {title}",
                   sign, targets["cam_two_stage_1"][metric],
                   _mean_result(by_loss[OURS], "two_stage_1", metric)))
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


def targets_section(runs, protocol: Optional[dict], group: str
                    ) -> list[str]:
  """`target_rows` as a table."""
  rows = target_rows(runs, protocol, group)
  if not rows:
    return []
  return [f"### Targets ({group}, mean over seeds)", "",
          "| what | target | measured | met |", "|---|---|---|---|"] + [
              f"| {what} | {sign} {goal} | {value:.4f} | {met} |"
              for what, sign, goal, value, met in rows] + [""]


def two_stage_section(runs, group: str) -> list[str]:
  ours = sorted((r for r in runs if r.group == group and r.loss == OURS),
                key=lambda r: r.seed)
  keys = sorted({k for r in ours for k in r.results
                 if k.startswith("two_stage_")})
  if not ours or not keys:
    return []
  exact_seconds = statistics.fmean(
      r.results.get("exact_search_seconds", math.nan) for r in ours)
  lines = [f"### Two-stage search ({group}, class anchor margin)", "",
           "| lists | kept | full-ranking mAP | P@10 | distances per query"
           " (share of exact) | top-100 seconds |", "|---|---|---|---|---|---|",
           f"| exact | all | {statistics.fmean(_map(r) for r in ours):.4f} |"
           f" {statistics.fmean(_map(r, 'precision@10') for r in ours):.4f} |"
           f" 1.00 | {exact_seconds:.3f} |"]
  for key in keys:
    source = "anchor" if key.startswith("two_stage_anchors_") else "label"
    mean = lambda metric, key=key: _mean_result(ours, key, metric)
    lines.append(f"| {source} | {key.rsplit('_', 1)[1]} | {mean('map'):.4f} |"
                 f" {mean('precision@10'):.4f} |"
                 f" {mean('distance_fraction'):.3f} | {mean('seconds'):.3f} |")
  return lines + ["", f"Means over {len(ours)} seed(s). Full-ranking mAP:"
                  " the kept lists' items by distance, then the rest by"
                  " distance. Label lists: an item is in its class's list;"
                  " anchor lists: in its nearest anchor's. Distances per"
                  " query count the query's distances to every class anchor"
                  " and to the kept lists' items.", ""]


def answer_section(runs, summaries: dict[str, list[runs_lib.Summary]],
                   protocol: Optional[dict], tests: dict[str, dict]
                   ) -> list[str]:
  """The report's answer up front, from the final groups: who wins each,
  with the significance, two-stage search with one list, the targets.
  `tests`: group -> `paired_tests(runs, group)`, shared with the group
  sections (the bootstraps are the report's slowest part)."""
  groups = sorted((g for g in summaries if g.startswith("final/")),
                  key=lambda g: ("full" not in g, g))
  if not groups:
    return []
  lines = ["## The answer", "",
           "From the final runs: test queries against the training split,"
           " full ranking, each loss with its validation-selected settings,"
           " in the geometry it declares. Details in the sections below.",
           ""]
  planned = len((protocol or {}).get("final_seeds", ()))
  tuned = {r.loss for r in runs if r.stage == "tuning"}
  for group in groups:
    seeds = sorted({len(row.seeds) for row in summaries[group]})
    losses = {row.loss for row in summaries[group]}
    done = (not planned or seeds == [planned]) and tuned <= losses
    parts = [runs_lib.verdict(summaries[group], OURS),
             significance_sentence(runs, group, tests.get(group))]
    lines.append(f"- **{group}** ({len(losses)}"
                 + (f" of {len(tuned)}" if tuned else "") + " losses, "
                 + "-".join(map(str, seeds))
                 + (f" of {planned}" if planned else "") + " seeds each"
                 + ("" if done else ", not finished") + "): "
                 + " ".join(p for p in parts if p))
  with_lists = [r for r in runs if r.group == "final/full" and
                r.loss == OURS and "two_stage_1" in r.results]
  if with_lists:
    anchors = _mean_result(with_lists, "two_stage_anchors_1", "map")
    lines.append(
        "- Two-stage search (final/full, class anchor margin): one label"
        " list gives full-ranking mAP"
        f" {_mean_result(with_lists, 'two_stage_1', 'map'):.4f} against"
        f" exact search's {statistics.fmean(map(_map, with_lists)):.4f},"
        " computing"
        f" {_mean_result(with_lists, 'two_stage_1', 'distance_fraction'):.4f}"
        " of its distances" + ("" if math.isnan(anchors) else
                        "; one anchor list (no database labels needed)"
                        f" {anchors:.4f}") + ".")
  rows = target_rows(runs, protocol, (protocol or {}).get(
      "targets", {}).get("group", ""))
  if rows:
    missed = [f"{what} {value:.4f} against {sign} {goal}"
              for what, sign, goal, value, met in rows if met != "yes"]
    lines.append(f"- Targets: {len(rows) - len(missed)} of {len(rows)} met"
                 + (f"; not met: {'; '.join(missed)}." if missed else "."))
  return lines + [""]


def term_activity(run) -> dict[str, float]:
  """How much the class anchor margin loss's anchor terms acted in a run,
  from its training log (values at every logged step): the share of logged
  steps with the repeller R > 0 and with the norm term N > 0, and at the
  last logged step the smallest inter-anchor distance over 2 * margin and
  the mean anchor norm over min_norm (NaN where not logged)."""
  from ra_jax.training import writers
  logged = [r for r in writers.read_metrics(run.workdir)
            if "train/repel" in r]
  loss = run.config["loss"]

  def share(key):
    return (sum(r[key] > 0 for r in logged) / len(logged) if logged
            else math.nan)

  last = logged[-1] if logged else {}
  ratio = lambda key, scale: (last[key] / scale if key in last and scale
                              else math.nan)
  return {"repel": share("train/repel"), "norm": share("train/norm"),
          "distance": ratio("train/min_anchor_distance",
                            2 * loss.get("margin", math.nan)),
          "anchor_norm": ratio("train/mean_anchor_norm",
                               loss.get("min_norm", math.nan))}


def ablation_section(runs) -> list[str]:
  ablation = [r for r in runs if r.stage == "ablation"]
  if not ablation:
    return []
  full = next((r for r in runs if r.group == "final/full" and r.loss == OURS
               and r.seed == 0), None)
  rows = ([("all three terms", full)] if full else []) + [
      (r.variant, r) for r in sorted(ablation, key=lambda r: r.variant)]
  lines = ["## Ablation of the class anchor margin loss's terms (test, seed"
           " 0)", "", "| terms | mAP | P@10 | nearest-anchor acc. |"
           " two-stage mAP, 1 label list | 1 anchor list | steps with R > 0"
           " | steps with N > 0 | min anchor distance / 2m |"
           " mean anchor norm / min_norm |", "|---|---|---|---|---|---|---|"
           "---|---|---|"]
  two_stage = lambda run, key: run.results.get(key, {}).get("map", math.nan)
  for name, run in rows:
    act = term_activity(run)
    lines.append(
        f"| {name} | {_map(run):.4f} | {_map(run, 'precision@10'):.4f} |"
        f" {run.results.get('nearest_anchor_accuracy', math.nan):.4f} |"
        f" {two_stage(run, 'two_stage_1'):.4f} |"
        f" {two_stage(run, 'two_stage_anchors_1'):.4f} |"
        f" {act['repel']:.0%} | {act['norm']:.0%} | {act['distance']:.2f} |"
        f" {act['anchor_norm']:.2f} |")
  return lines + [
      "", "R and N are sampled at every logged training step (the value at"
      " that step, not a window mean); the ratios are at the last step: the"
      " repeller is satisfied where the distance ratio is >= 1, and the norm"
      " ratio shows how far the anchors are from the norm floor. A"
      " switched-off term is still computed and logged. No row drops the"
      " attractor: the repeller and the norm term act on the anchors only,"
      " so without it the network would get no gradient at all.", ""]


def diagnosis_section(root: str, runs) -> list[str]:
  """Cross-entropy's gap, looked into: its embedding taken elsewhere
  (diagnosis/embedding_choices_*.json) and BatchNorm on the embedding."""
  directory = files.join(root, "diagnosis")
  choices = sorted(name for name in (files.listdir(directory)
                                     if files.isdir(directory) else [])
                   if name.startswith("embedding_choices_"))
  diagnosed = [r for r in runs if r.stage == "diagnosis"]
  if not choices and not diagnosed:
    return []
  lines = ["## Diagnosis: where the embedding is taken", ""]
  groups: dict[str, list[dict]] = {}  # ..._seedN.json files: one table
  for name in choices:
    tag = re.sub(r"_seed\d+$", "", name.removesuffix(".json"))
    groups.setdefault(tag, []).append(
        files.read_json(files.join(directory, name)))
  for found in groups.values():
    first = found[0]
    where = (f"checkpoint step {first['step']} of {first['workdir']}"
             if len(found) == 1 else
             f"the final checkpoints of {len(found)} seeds, mean ± std")
    lines += [f"{_title(first['loss'])}, {first['query_split']} queries"
              f" against the {first['database_split']} split, {where}:", "",
              "| embedding | mAP | P@10 | mAP@100 |", "|---|---|---|---|"]
    for choice in first["choices"]:
      cells = []
      for metric in ("map", "precision@10", "map@100"):
        values = [f["choices"][choice][metric] for f in found]
        cells.append(f"{values[0]:.4f}" if len(values) == 1 else
                     f"{statistics.fmean(values):.4f} ±"
                     f" {statistics.stdev(values):.4f}")
      lines.append(f"| {choice} | " + " | ".join(cells) + " |")
    lines.append("")
  for run in diagnosed:
    tuned = max((r for r in runs if r.stage == "tuning" and
                 r.loss == run.loss), key=_map, default=None)
    if tuned is not None:
      lines += [f"{_title(run.loss)} with {run.variant}: validation mAP"
                f" {_map(run):.4f} against {_map(tuned):.4f} for its best"
                f" trial as tuned ({_map(run) - _map(tuned):+.4f}).", ""]
  return lines


def missing_stages(runs) -> list[str]:
  present = {r.stage for r in runs}
  missing = [s for s in STAGE_ORDER if s not in present]
  if not missing:
    return []
  return [f"Stages with no finished run yet: {', '.join(missing)}"
          " (`python -m benchmarks.grid --stage STAGE`).", ""]
