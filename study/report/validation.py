"""The study report's validation-side sections (runs whose study record
names a stage of study/grid.py): the protocol and search spaces, the tuning
on the validation split, the focus loss's variants and the training length.
The test-side sections are in `verdicts` (the answer, targets) and
`diagnostics` (the ablation, cross-entropy's diagnosis).

Everything is read from the run files and `protocol.json` at the root; a
stage that has not run yet is reported as missing, not skipped silently.
"""

import statistics
from typing import Any, Sequence

from ra_jax import files
from ra_jax.report import runs as runs_lib
from study import rules
from study.rules import adopted_variant
from study.rules import COMBINED
from study.rules import last_quarter_gain
from study.rules import validation_curve
from study.rules import variant_winners

_map = runs_lib.exact_value  # a run's exact mAP (or another metric)
_title = runs_lib.loss_title


def read_protocol(root: str) -> dict:
  """The study's protocol.json at `root` (written by study/grid.py)."""
  path = files.join(root, "protocol.json")
  if not files.exists(path):
    raise FileNotFoundError(f"{root} holds no study: {path} does not exist"
                            " (python -m study.grid writes it)")
  return files.read_json(path)


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


def _validation_text(protocol: dict) -> str:
  """How the setting's model selection queries, from its protocol."""
  validation = protocol["validation"]
  if validation.get("dataset.validation_examples"):
    return (f"{validation['dataset.validation_examples']:,} training images"
            " held out (stratified, seed"
            f" {validation.get('dataset.validation_seed', 0)}) as the"
            " queries, the rest as training data and database")
  return (f"the dataset's own {validation['dataset.query_split']!r} split"
          " as the queries against the training split")


def protocol_section(protocol: dict) -> list[str]:
  recipe = protocol["recipe"]
  search = protocol["search"]
  carried = protocol.get("carried")
  lines = [
      "## Protocol", "",
      *([f"Setting: {protocol['title']}.", ""] if "title" in protocol
        else []),
      "- Recipe shared by every loss (the tuning trials then set the"
      " optimizer, learning rate and their own length): " + ", ".join(
          f"{k} {v}" for k, v in recipe.items()) + ".",
      f"- Model selection on validation: {_validation_text(protocol)}; the"
      " test split is used by the final runs only.",
      f"- Tuning: {search['trials_per_loss']} trials per loss,"
      f" {protocol['tuning_epochs']} epochs each; {search['design']}"
      + "".join(f"; {field} {space}" for field, space in search.get(
          "shared", {}).items()) + "."]
  if carried:
    lines += [
        "", "Each loss's own hyperparameters are carried over from the"
        f" best trial of setting {search['carried_from']!r}, not searched"
        " here:", "", "| loss | its own hyperparameters (carried) |",
        "|---|---|"]
    lines += [f"| {_title(loss)} | " + (", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in fields.items()) or "none") + " |"
              for loss, fields in carried.items()]
  else:
    lines += ["", "Search spaces (the same trial budget for every loss):",
              "", "| loss | its own hyperparameters |", "|---|---|"]
    for loss, space in search["losses"].items():
      lines.append(f"| {_title(loss)} | " + "; ".join(
          f"{k} {v}" for k, v in space.items()) + " |")
  optimizers = "; ".join(
      f"{name}: learning rate {spec['learning_rate']}, " + ", ".join(
          f"{k.split('.')[-1]} {v}" for k, v in spec["settings"].items()
          if k != "optim.name")
      for name, spec in search["optimizers"].items())
  lines += ["", f"Optimizers, shared by every loss: {optimizers}.", ""]
  return lines


def _split_sizes(run: runs_lib.RunRecord, protocol: dict) -> str:
  """"10,000 held-out training images against the other 50,000": the
  run's query and database split sizes."""
  dataset = run.results["dataset"]
  sizes = dataset["split_sizes"]
  queries, database = (sizes[dataset["query_split"]],
                       sizes[dataset["database_split"]])
  if protocol["validation"].get("dataset.validation_examples"):
    return (f"{queries:,} held-out training images against the other"
            f" {database:,}")
  return (f"the {dataset['query_split']} split's {queries:,} images"
          f" against the {database:,} of the {dataset['database_split']}"
          " split")


def planned_tuning_runs(protocol: dict) -> int:
  """The tuning trials the protocol plans: so many per loss, every loss."""
  search = protocol["search"]
  return search["trials_per_loss"] * len(search["losses"])


def tuning_section(runs: Sequence[runs_lib.RunRecord], protocol: dict,
                   diverged: Sequence[runs_lib.RunRecord] = ()
                   ) -> list[str]:
  """Every loss's trials on validation; `diverged`: the trials whose loss
  turned non-finite (they rank last and are counted, not scored)."""
  tuning = [r for r in runs if r.stage == "tuning"]
  failed = [r for r in diverged if r.stage == "tuning"]
  if not tuning:
    return []
  focus = protocol["focus"]
  budget = protocol["search"]["trials_per_loss"]
  by_loss: dict[str, list] = {}
  for run in tuning:
    by_loss.setdefault(run.loss, []).append(run)
  failed_by_loss = {loss: [r for r in failed if r.loss == loss]
                    for loss in by_loss}
  lines = ["## Tuning on the validation split", "",
           f"Validation mAP ({_split_sizes(tuning[0], protocol)}, full"
           " ranking) of every trial; each loss in its declared geometry.",
           "",
           "| loss | geometry | trials | diverged | best mAP | its P@10 |"
           " median mAP | worst mAP | best trial's settings |",
           "|---|---|---|---|---|---|---|---|---|"]
  best = {}
  for loss, members in sorted(by_loss.items(),
                              key=lambda kv: -max(map(_map, kv[1]))):
    top = max(members, key=_map)
    best[loss] = top
    values = [_map(r) for r in members]
    count = len(members) + len(failed_by_loss[loss])
    lines.append(
        f"| {_title(loss)} | {top.config['loss'].get('geometry', '?')} |"
        f" {count}{f' of {budget}' if budget else ''} |"
        f" {len(failed_by_loss[loss])} |"
        f" {_map(top):.4f} | {_map(top, 'precision@10'):.4f} |"
        f" {statistics.median(values):.4f} | {min(values):.4f} |"
        f" {top.variant}: {_settings_text(top.grid.get('settings', {}))} |")
  lines.append("")
  for run in failed:
    lines += [f"- Diverged: {run.grid.get('path', run.workdir)} (step"
              f" {run.results.get('steps', '?')}; settings"
              f" {_settings_text(run.grid.get('settings', {}))})."]
  if failed:
    lines.append("")
  counts = {len(m) + len(failed_by_loss[loss])
            for loss, m in by_loss.items()}
  if budget and (counts != {budget} or len(by_loss) < len(
      protocol["search"]["losses"])):
    done = sum(map(len, by_loss.values())) + len(failed)
    lines += [f"The search is not finished: {done}"
              f" of {planned_tuning_runs(protocol)} trials"
              " have run; the ranking below is provisional.", ""]
  ranked = sorted(best, key=lambda loss: -_map(best[loss]))
  if focus in best and len(ranked) > 1:
    rank = ranked.index(focus) + 1
    leader = ranked[0] if ranked[0] != focus else ranked[1]
    gap = _map(best[focus]) - _map(best[leader])
    subject = runs_lib.loss_subject(focus)
    lines += [f"At its best trial {subject[0].lower() + subject[1:]} ranks"
              f" {rank} of {len(ranked)} on validation"
              f" ({_map(best[focus]):.4f},"
              f" {gap:+.4f} against {_title(leader)},"
              f" {_map(best[leader]):.4f}).", ""]
  return lines


def variants_section(runs, protocol) -> list[str]:
  variants = [r for r in runs if r.stage == "variants"]
  if not variants:
    return []
  focus = protocol["focus"]
  tuned = max((r for r in runs if r.stage == "tuning" and r.loss == focus),
              key=_map, default=None)
  table: dict[str, dict[int, float]] = {}
  if tuned is not None:
    table["tuned"] = {0: _map(tuned)}
  for run in variants:
    table.setdefault(run.variant, {})[run.seed] = _map(run)
  seeds = sorted({s for row in table.values() for s in row})
  text = protocol.get("variants", {})
  lines = [f"## {runs_lib.loss_subject(focus)}'s variants (validation)", "",
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
  lines += ["", "The tuned setting's seed 0 is the best of its"
            f" {protocol['search']['trials_per_loss']} trials, so"
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


def _epochs(run) -> int:
  return int(run.variant.removeprefix("epochs"))  # grid path .../epochsN


def _converged(curve, protocol: dict) -> tuple[Any, bool]:
  """A length run's gain over its last quarter and whether it converged."""
  gain = last_quarter_gain(curve)
  return gain, rules.converged(gain, protocol["converged_gain"])


def final_length(runs, protocol: dict) -> Any:
  """(epochs, loss, converged): the final runs' length by the grid's rule
  (`rules.final_length`) on the best baseline, the only loss but the focus
  loss with length runs; None while the rule chooses none."""
  baseline = [r for r in runs
              if r.stage == "length" and r.loss != protocol["focus"]]
  chosen = rules.final_length(
      {_epochs(r): last_quarter_gain(validation_curve(r.workdir))
       for r in baseline},
      protocol["length_epochs"], protocol["converged_gain"])
  return (chosen[0], baseline[0].loss, chosen[1]) if chosen else None


def length_section(runs, protocol, figure_dir: str, rel: str) -> list[str]:
  length = [r for r in runs if r.stage == "length"]
  if not length:
    return []
  from ra_jax.report import figures
  curves = {}
  # what the selection saw of each loss: its best trial at tuning length
  tuned = {}
  for run in runs:
    if run.stage == "tuning":
      tuned[run.loss] = max(tuned.get(run.loss, 0.0), _map(run))
  lines = ["## Training length (validation)", "",
           f"| loss | best tuning trial ({protocol['tuning_epochs']} epochs)"
           " | epochs | final validation mAP | gain over the last quarter |",
           "|---|---|---|---|---|"]
  for run in sorted(length, key=lambda r: (r.loss, _epochs(r))):
    curve = validation_curve(run.workdir)
    curves[f"{_title(run.loss)}, {_epochs(run)} epochs"] = curve
    gain, converged = _converged(curve, protocol)
    state = "converged" if converged else "still rising"
    tuning = f"{tuned[run.loss]:.4f}" if run.loss in tuned else "-"
    lines.append(f"| {_title(run.loss)} | {tuning} | {_epochs(run)} |"
                 f" {_map(run):.4f} |"
                 + (f" {gain:+.4f} ({state}) |" if gain is not None else
                    " - |"))
  figures.validation_curves(files.join(figure_dir, "length_curves.png"),
                            curves)
  chosen = final_length(length, protocol)
  lines += ["", "The selection compared the losses after the tuning's"
            f" {protocol['tuning_epochs']} epochs only: a loss that gains"
            " much more from there to its length run started slowly, and"
            " its tuning rank understates it.", "",
            f"Converged = the gain over the last quarter is below"
            f" {protocol['converged_gain']}. The rule is on the best"
            " baseline: "
            + (f"the final runs train {chosen[0]} epochs, the shortest"
               f" length at which {_title(chosen[1])} converged."
               if chosen and chosen[2] else
               f"{_title(chosen[1])} had not converged at {chosen[0]}"
               " epochs, the longest length the protocol affords: the"
               f" final runs train {chosen[0]} epochs, short of"
               " convergence." if chosen else
               "it has not converged at any length run so far."), "",
            f"![validation mAP during training]({rel}/length_curves.png)", ""]
  return lines


def missing_stages(runs, protocol: dict) -> list[str]:
  present = {r.stage for r in runs}
  missing = [s for s in protocol["stages"] if s not in present]
  if not missing:
    return []
  return [f"Stages with no finished run yet: {', '.join(missing)}"
          " (`python -m study.grid --stage STAGE`).", ""]
