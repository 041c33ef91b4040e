"""The report's validation-side sections for a staged results grid
(benchmarks/grid.py: runs whose grid.json names a stage): the protocol and
search spaces, the tuning on the validation split, the class anchor margin
loss's variants and the training length. The test-side sections are in
`verdicts` (final runs, significance, targets, two-stage search) and
`diagnostics` (the ablation, cross-entropy's diagnosis).

Everything is read from the run files and `protocol.json` at the root; a
stage that has not run yet is reported as missing, not skipped silently.
"""

import statistics
from typing import Any, Optional, Sequence

from ra_jax import files
from ra_jax.report import runs as runs_lib
from ra_jax.report.runs import OURS

_map = runs_lib.exact_value  # a run's exact mAP (or another metric)
_title = runs_lib.loss_title
STAGE_ORDER = ("tuning", "variants", "length", "final", "ablation",
               "diagnosis")


def read_protocol(root: str) -> Optional[dict]:
  path = files.join(root, "protocol.json")
  return files.read_json(path) if files.exists(path) else None


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


def missing_stages(runs) -> list[str]:
  present = {r.stage for r in runs}
  missing = [s for s in STAGE_ORDER if s not in present]
  if not missing:
    return []
  return [f"Stages with no finished run yet: {', '.join(missing)}"
          " (`python -m benchmarks.grid --stage STAGE`).", ""]
