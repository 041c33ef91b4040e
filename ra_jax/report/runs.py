"""Finding finished runs under a directory and summarising them by group.

A run is a work dir with results.json and config.json. Its group comes from
the study record a study writes into it (`workdir.STUDY_RECORD`: the path
<group...>/<label>/<run>, and the stage the run belongs to), else from its
config: "<dataset>/full" or "<dataset>/<shot>-shot". Its label
is the loss's full name from the loss registry, with the hyperparameters
that differ from the defaults ("triplet (mining=hard)"), plus the grid's
variant for runs that change another setting ("... [emb=128]") and the model
when a group mixes models. Seeds of the same group and label are aggregated
as mean ± std.
"""

import dataclasses
import statistics
from typing import Optional

from ra_jax import files, losses
from ra_jax.training import evaluation
from ra_jax.training import workdir as workdir_lib

METRICS = (("map", "mAP"), ("map@100", "mAP@100"),
           ("precision@10", "P@10"), ("precision@100", "P@100"))


@dataclasses.dataclass
class RunRecord:
  """One finished run. `loss`: its registry name; `name`: the loss's full
  name with non-default hyperparameters; `variant`: the grid's name for a
  change outside the loss (None for none); `label`: what tables show."""
  workdir: str
  group: str
  label: str
  seed: int
  config: dict
  results: dict
  loss: str = ""
  name: str = ""
  variant: Optional[str] = None
  stage: Optional[str] = None  # the study's stage, if any
  grid: dict = dataclasses.field(default_factory=dict)  # its study record

  @property
  def wall_seconds(self) -> float:
    return float(self.results.get("run", {}).get("wall_seconds", 0.0))


def _load(path: str) -> Optional[dict]:
  try:
    return files.read_json(path)
  except FileNotFoundError:
    return None


def find_runs(root: str) -> list[RunRecord]:
  """Every finished run at or below `root`, sorted by group, label, seed;
  results.json files of older versions are read in today's form
  (`evaluation.upgraded_results`)."""
  runs = []
  for directory, subdirs, names in files.walk(root):
    subdirs[:] = sorted(d for d in subdirs if d not in workdir_lib.NOT_RUNS)
    if not workdir_lib.is_run(names):
      continue
    results = evaluation.upgraded_results(_load(workdir_lib.path(
        directory, workdir_lib.RESULTS)))
    config = _load(workdir_lib.path(directory, workdir_lib.CONFIG))
    grid = workdir_lib.read_study_record(directory)
    loss = config["loss"]["name"]
    name = loss_name(config["loss"])
    if grid is not None:
      group = "/".join(grid["path"].split("/")[:-2])
      seed, variant = grid["seed"], grid.get("variant")
    else:
      shot = config["dataset"].get("shot", 0)
      group = (f"{config['dataset']['name']}/"
               f"{f'{shot}-shot' if shot else 'full'}")
      seed, variant = config["train"]["seed"], None
    label = name + (f" [{variant}]" if variant else "")
    runs.append(RunRecord(directory, group, label, int(seed), config, results,
                          loss=loss, name=name, variant=variant,
                          stage=(grid or {}).get("stage"), grid=grid or {}))
  _name_models(runs)
  return sorted(runs, key=lambda r: (r.group, r.label, r.seed))


def loss_title(loss: str) -> str:
  """A registered loss's title, e.g. "class anchor margin" for "cam"."""
  return loss_name({"name": loss})


def loss_subject(loss: str) -> str:
  """A loss as the subject of a sentence: "The class anchor margin loss",
  "The center loss"."""
  title = loss_title(loss)
  return f"The {title}" + ("" if title.endswith("loss") else " loss")


def loss_name(loss_config: dict) -> str:
  """The full name of a run's loss from its config section (the registry's
  title with the non-default hyperparameters); the bare name for a loss
  this version does not know."""
  hyperparameters = {k: v for k, v in loss_config.items() if k != "name"}
  try:
    return losses.get_loss(loss_config["name"]).describe(hyperparameters)
  except ValueError:
    return str(loss_config["name"])


def _name_models(runs: list[RunRecord]) -> None:
  """Adds the model to labels where one group holds several models."""
  by_group: dict[str, set] = {}
  for run in runs:
    by_group.setdefault(run.group, set()).add(run.config["model"]["name"])
  for run in runs:
    if len(by_group[run.group]) > 1:
      run.label = f"{run.label} ({run.config['model']['name']})"


def exact_value(run: RunRecord, key: str = "map") -> float:
  """One exact-search metric of a run (mAP by default)."""
  return float(run.results["exact"][key])


def metric_values(run: RunRecord) -> dict[str, float]:
  exact = run.results["exact"]
  out = {key: exact[key] for key, _ in METRICS if key in exact}
  if "nearest_anchor_accuracy" in run.results:
    out["nearest_anchor_accuracy"] = run.results["nearest_anchor_accuracy"]
  return out


@dataclasses.dataclass
class Summary:
  label: str
  seeds: list[int]
  mean: dict[str, float]
  std: dict[str, float]
  num_queries: int = 0
  loss: str = ""  # the registry name of the runs' loss


def summarise(runs: list[RunRecord]) -> dict[str, list[Summary]]:
  """group -> one Summary per label (mean and sample std over seeds)."""
  grouped: dict[str, dict[str, list[RunRecord]]] = {}
  for run in runs:
    grouped.setdefault(run.group, {}).setdefault(run.label, []).append(run)
  out = {}
  for group, labels in grouped.items():
    rows = []
    for label, members in labels.items():
      values = [metric_values(r) for r in members]
      keys = set.intersection(*(set(v) for v in values))
      rows.append(Summary(
          label, [r.seed for r in members],
          {k: statistics.fmean(v[k] for v in values) for k in keys},
          {k: statistics.stdev(v[k] for v in values) if len(values) > 1
           else 0.0 for k in keys},
          int(members[0].results["exact"].get("num_queries", 0)),
          members[0].loss))
    out[group] = rows
  return out


def verdict(rows: list[Summary], focus: Optional[str]) -> Optional[str]:
  """One sentence: who has the best mean mAP, and where the `focus` loss
  (a registry name; None: no sentence) stands."""
  rows = [r for r in rows if "map" in r.mean]
  mine = next((r for r in rows if r.loss == focus), None)
  if mine is None or len(rows) < 2:
    return None
  subject = loss_subject(focus)
  others = [r for r in rows if r is not mine]
  best_other = max(others, key=lambda r: r.mean["map"])
  gap = mine.mean["map"] - best_other.mean["map"]
  spread = max(mine.std["map"], best_other.std["map"])
  if gap > 0:
    return (f"{subject} has the best mean mAP"
            f" ({mine.mean['map']:.4f}), {gap:+.4f} over the best baseline,"
            f" {best_other.label} ({best_other.mean['map']:.4f})"
            + (f"; the gap is {'larger' if gap > 2 * spread else 'not larger'}"
               f" than twice the larger seed std ({spread:.4f})."
               if len(mine.seeds) > 1 else "."))
  rank = 1 + sum(r.mean["map"] > mine.mean["map"] for r in others)
  return (f"{subject} does not win here: {best_other.label}"
          f" has the best mean mAP ({best_other.mean['map']:.4f}),"
          f" {subject[0].lower() + subject[1:]} is ranked {rank} of"
          f" {len(rows)} with {mine.mean['map']:.4f} ({gap:+.4f}).")
