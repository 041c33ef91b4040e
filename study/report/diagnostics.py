"""What explains the numbers: the ablation of the class anchor margin loss's
terms (with how much each term acted during training) and cross-entropy's
gap looked into (where its embedding is taken)."""

import math
import re
import statistics

from ra_jax import files
from ra_jax.report import comparison
from ra_jax.report import runs as runs_lib
from ra_jax.training import writers
from study import reproduce

_map = runs_lib.exact_value  # a run's exact mAP (or another metric)
_title = runs_lib.loss_title


def term_activity(run) -> dict[str, float]:
  """How much the class anchor margin loss's anchor terms acted in a run,
  from its training log (values at every logged step): the share of logged
  steps with the repeller R > 0 and with the norm term N > 0, and at the
  last logged step the smallest inter-anchor distance over 2 * margin and
  the mean anchor norm over min_norm (NaN where not logged)."""
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


def ablation_section(runs, protocol: dict) -> list[str]:
  ablation = [r for r in runs if r.stage == "ablation"]
  if not ablation:
    return []
  focus = protocol["focus"]
  # the ablation switches terms off in the variant recipe: its reference
  # is that recipe's final run on the same seed
  full = next((r for r in runs if r.group == "variant_final/full" and
               r.loss == focus and r.seed == 0), None)
  rows = ([("all three terms", full)] if full else []) + [
      (r.variant, r) for r in sorted(ablation, key=lambda r: r.variant)]
  lines = [f"## Ablation of {runs_lib.loss_subject(focus)[0].lower()}"
           f"{runs_lib.loss_subject(focus)[1:]}'s terms (test, seed"
           " 0)", "", "| terms | mAP | P@10 | nearest-anchor acc. |"
           " two-stage mAP, 1 label list | 1 anchor list | steps with R > 0"
           " | steps with N > 0 | min anchor distance / 2m |"
           " mean anchor norm / min_norm |", "|---|---|---|---|---|---|---|"
           "---|---|---|"]
  two_stage = lambda run, source: comparison.mean_search_value(
      [run], source, 1, "map")
  # each run's training log, read once for the table and its reading
  activity = {name: term_activity(run) for name, run in rows}
  for name, run in rows:
    act = activity[name]
    lines.append(
        f"| {name} | {_map(run):.4f} | {_map(run, 'precision@10'):.4f} |"
        f" {run.results.get('nearest_anchor_accuracy', math.nan):.4f} |"
        f" {two_stage(run, 'labels'):.4f} |"
        f" {two_stage(run, 'anchors'):.4f} |"
        f" {act['repel']:.0%} | {act['norm']:.0%} | {act['distance']:.2f} |"
        f" {act['anchor_norm']:.2f} |")
  return lines + [""] + _ablation_reading(rows, full, activity) + [
      "", "R and N are sampled at every logged training step (the value at"
      " that step, not a window mean); the ratios are at the last step: the"
      " repeller is satisfied where the distance ratio is >= 1, and the norm"
      " ratio shows how far the anchors are from the norm floor. A"
      " switched-off term is still computed and logged. No row drops the"
      " attractor: the repeller and the norm term act on the anchors only,"
      " so without it the network would get no gradient at all.", ""]


def _off_terms(run) -> frozenset[str]:
  loss = run.config["loss"]
  return frozenset(t for t in ("repel", "norm")
                   if loss.get(f"{t}_weight", 1.0) == 0)


def _ablation_reading(rows, full, activity: dict[str, dict]) -> list[str]:
  """Each ablation row's mAP against all three terms (`full`, or None), and
  the pairs that differ in one term yet give identical results: that term
  never acted. `activity`: each row's `term_activity`, by row name."""
  lines = []
  off = {name: _off_terms(run) for name, run in rows}
  for name, run in rows:
    if run is not full and full is not None:
      lines.append(
          f"- {name} (without the {' and '.join(sorted(off[name]))} term"
          f"{'s' if len(off[name]) > 1 else ''}):"
          f" mAP {_map(run) - _map(full):+.4f}"
          " against all three terms; the closest two anchors end"
          f" {activity[name]['distance']:.2f} x 2m apart.")
  for i, (name_a, a) in enumerate(rows):
    for name_b, b in rows[i + 1:]:
      differ = off[name_a] ^ off[name_b]
      if len(differ) != 1 or a.results["exact"] != b.results["exact"]:
        continue
      (term,) = differ
      on = name_a if term not in off[name_a] else name_b
      lines.append(
          f"- {name_a} and {name_b} differ only in the {term} term and give"
          " identical results to the last digit: with it on, the term was"
          f" > 0 at {activity[on][term]:.0%} of the logged steps, so"
          " switching it off changes nothing on this recipe.")
  return lines


def _choices_reading(found: list[dict]) -> list[str]:
  """Each embedding choice's mAP against the first one, the embedding as
  trained (mean over the files' seeds), and which choice ranks best."""
  names = list(found[0]["choices"])
  if len(names) < 2:
    return []
  mean = {name: statistics.fmean(f["choices"][name]["map"] for f in found)
          for name in names}
  trained, others = names[0], names[1:]
  best = max(names, key=mean.get)
  changes = "; ".join(f"{name} {mean[name] - mean[trained]:+.4f}"
                      for name in others)
  verdict = (f"the best choice is {best} ({mean[best]:.4f}),"
             f" {mean[best] - mean[trained]:+.4f} over the embedding as"
             " trained" if best != trained else
             "no other choice beats the embedding as trained")
  return [f"mAP against {trained} ({mean[trained]:.4f}): {changes};"
          f" {verdict}."]


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
    lines += ["", *_choices_reading(found), ""]
  for run in diagnosed:
    tuned = max((r for r in runs if r.stage == "tuning" and
                 r.loss == run.loss), key=_map, default=None)
    if tuned is not None:
      lines += [f"{_title(run.loss)} with {run.variant}: validation mAP"
                f" {_map(run):.4f} against {_map(tuned):.4f} for its best"
                f" trial as tuned ({_map(run) - _map(tuned):+.4f}).", ""]
  return lines


def reproduction_section(root: str) -> list[str]:
  """The committed runs retrained from scratch (`python -m
  study.reproduce`, recorded in the results' reproduced.json): every
  attempt, with the CPU it ran on against the committed run's."""
  path = files.join(root, "reproduced.json")
  if not files.exists(path):
    return []
  rows = [(run, attempt) for run, entry in files.read_json(path).items()
          for attempt in reproduce.attempts(entry)]
  same = sum(a["reproduces"] for _, a in rows)
  lines = ["## Reproduced from scratch", "",
           f"Committed runs retrained from scratch by `python -m"
           f" study.reproduce PATH` (a scratch copy of the results without"
           f" the run, so the grid plans it again from the same committed"
           f" selection): {same} of {len(rows)} attempts reproduce to the"
           f" bit — the parameters byte for byte, every result and every"
           f" logged value, apart from images/s and wall times. Runs are"
           f" bit-identical on one CPU model with one number of usable"
           f" cores, not across models: XLA's code follows the host's"
           f" instruction set, and this project's machines of one kind have"
           f" come with more than one AMD EPYC generation. (Its CPU thread"
           f" count follows the cores too: a rerun is pinned to as many as"
           f" the committed run recorded.) A rerun on another CPU is another"
           f" sample of the same seed.", "",
           "| run | retrained | outcome | rerun's CPU (the committed run's)"
           " | differences | fields added since |", "|---|---|---|---|---|---|"]
  for run, a in rows:
    shown = "; ".join(a["differences"][:3]) or "-"
    if a["differences_count"] > 3:
      shown += f" (and {a['differences_count'] - 3} more)"
    added = ", ".join(f.strip("/").replace("/", ".")
                      for f in a["config_fields_added"]) or "-"
    lines.append(f"| {run} | {a['date']} |"
                 f" {'reproduces' if a['reproduces'] else '**differs**'} |"
                 f" {_cpus(a)} | {shown} | {added} |")
  return lines + [""]


def _cpus(attempt: dict) -> str:
  """The rerun's CPU, and whether the committed run's was the same."""
  def cpu(machine):
    if not machine:
      return "not recorded"
    name = machine.get("cpu_model") or machine.get("system", "not recorded")
    cores = machine.get("usable_cores")
    return name if cores is None else (
        f"{name}, {cores} core{'s' if cores > 1 else ''}")
  rerun = cpu(attempt.get("machine"))
  same = attempt.get("same_cpu")
  if same:
    return f"{rerun} (the same)"
  committed = cpu(attempt.get("committed_machine"))
  return f"{rerun} ({'another: ' if same is False else ''}{committed})"
