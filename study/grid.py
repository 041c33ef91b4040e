"""The experiments behind docs/RESULTS.md (issues 14, 29 and 30),
resumable across interruptions and machines:

  python -m study.grid [--setting fashion_mnist] --stage STAGE [--only cam/]
      [--workers 2] [--dry-run]
  python -m study.report    # every setting's report, docs/RESULTS*.md
  bash study/queue.sh       # every run still owed, in order

SETTING is one of study/settings.py's (dataset, backbone) settings, each
with its own results directory. STAGE, in order (each reads what the ones
before selected, from the committed results, and says what is missing if
they have not finished; a setting has only some of them): tuning,
variants, length, final, variant_final, ablation, diagnosis.

Protocol (written to <results>/protocol.json):
- Every loss trains with its setting's recipe (`Setting.recipe`; for
  Fashion-MNIST: ResNet-18 (CIFAR stem) at width 8, 128-d embeddings,
  batches of 25 images of each of the 10 classes for every loss, so the
  sampler is no confound), warm-up then cosine decay; each in the geometry
  its loss declares (`loss.geometry`, default from the registry).
- Model selection never sees the test split: it queries a validation split
  (Fashion-MNIST: a stratified 10,000 of the 60,000 training images,
  validation_seed 0, against the other 50,000; font_chars: the builder's
  own validation split of unseen font designs, against the training split).
- Stage "tuning": the setting's tuning epochs per trial, the setting's
  search (study/search_spaces.py: the same optimizers and learning rates
  for every loss; each loss's own hyperparameters searched, or carried
  over from another setting's selection); the trial with the best
  validation mAP is the loss's tuned setting. A trial whose loss turns
  non-finite is recorded as diverged and ranks last.
- "variants": the class anchor margin loss's variants (VARIANT_TEXT) under
  the same budget, seeds 0 and 1; one is adopted only if it beats the tuned
  setting on both seeds.
- "length": the best baseline and the class anchor margin loss at the
  setting's lengths, evaluated on the whole validation split every epoch;
  the final length is the shortest at which the baseline's validation mAP
  gains less than CONVERGED over the last quarter of training, or, if it
  still gains that much at the longest, the longest (the setting's cap on
  what its finals can afford; the report says the baseline had not
  converged).
- "final": the headline comparison, under the same selection budget for
  every loss (its tuning trials): each loss's best trial, final length,
  test protocol (queries = test split, database = training split), seeds
  0-2, full training set and (where the setting has it) 10-shot (the
  dataset config's `shot=10`); per-query APs, two-stage search by each
  loss's class vectors and by the database's class centroids, and the
  final parameters kept.
- "variant_final": the focus loss with its adopted variant, the same
  final runs: the variant's gain, reported with its extra budget, outside
  the headline comparison.
- "ablation": the focus loss's terms switched off, variant recipe (seed 0).
- "diagnosis": cross-entropy's best trial with BatchNorm on the embedding
  (outside the equal-budget comparison); with
  `python -m study.embedding_choices --workdir runs/grid/tuning/ce/trialK
  --out results/grid/diagnosis/embedding_choices_ce.json`, where its
  embedding is taken. The final stage measures the same for each final
  cross-entropy run (`Setting.diagnosed`) as soon as it has trained.

`--workers N` trains N runs at once, each worker pinned to its share of
the cores (on 2 cores: 1.13-1.43x the images/s, docs/benchmarks.md); the
workers claim runs with locks (study/claims.py) and start a run that
another's result could make unnecessary (`Run.waits_for`) only once that
result is in. A run's last bits depend on its cores: results.json records
them.

A run's work dir (checkpoints included) is `--workdirs/<path>`; once it
has finished, its small files (results.json, config.json, metrics.jsonl,
grid.json, and the final runs' params.msgpack) are copied to
`--results/<path>`, which is what gets committed and what marks the run as
done on any machine. A setting's first stage records the dataset it
trains on (`<results>/dataset.json`, study/dataset_record.py); a later
stage on another machine refuses a dataset with another fingerprint.
"""

import argparse
import dataclasses
import importlib
import json
import math
import os
import sys
import time
from typing import Any, Callable, Optional

from configs.common import set_fields
from ra_jax import files
from ra_jax.training import workdir as workdir_lib
from study import claims
from study import dataset_record
from study import rules
from study.settings import FOCUS, LOSS_RECIPE, SETTINGS, Setting

# The files of a finished run that are committed under --results.
KEPT_FILES = (workdir_lib.RESULTS, workdir_lib.CONFIG, workdir_lib.METRICS,
              workdir_lib.STUDY_RECORD, workdir_lib.PARAMS)
DIVERGED = rules.DIVERGED


def recipe(setting: Setting, loss: str):
  """`setting`'s dataset config of `loss` with its recipe applied."""
  arg = ",".join(filter(None, (setting.config_arg, f"loss={loss}")))
  config = importlib.import_module(f"configs.{setting.dataset}").get_config(
      arg)
  set_fields(config, {**setting.recipe, **LOSS_RECIPE.get(loss, {})})
  return config


def tuning_eval(setting: Setting) -> dict[str, Any]:
  """Tuning and variant runs are selected on exact-search validation mAP
  only: no evaluation during training, no two-stage search at the end."""
  return {"train.epochs": setting.tuning_epochs, "eval.every": 0,
          "eval.two_stage_lists": ()}


@dataclasses.dataclass
class Run:
  path: str  # <stage>/<loss>/<name>, relative to --workdirs and --results
  stage: str
  loss: str
  settings: dict[str, Any]  # dotted config fields over the recipe
  seed: int = 0
  setting: Setting = dataclasses.field(kw_only=True)
  # Runs (paths) whose results can make this one unnecessary: a worker
  # starts it only once they are done (study.grid --workers).
  waits_for: tuple[str, ...] = dataclasses.field(default=(), kw_only=True)

  def config(self):
    config = recipe(self.setting, self.loss)
    set_fields(config, {**self.settings, "train.seed": self.seed})
    return config

  def record(self) -> dict[str, Any]:
    """grid.json: what the report needs to place the run."""
    parts = self.path.split("/")
    variant = parts[-1] if self.stage in ("tuning", "length") else (
        parts[-2] if self.stage in ("variants", "ablation", "diagnosis")
        else None)
    return {"path": self.path, "stage": self.stage, "loss": self.loss,
            "seed": self.seed, "settings": self.settings,
            "variant": variant}


def carried_hyperparameters(setting: Setting, loss: str) -> dict[str, Any]:
  """`loss`'s own hyperparameters in `setting` when they are carried over:
  the fields of its search space in the source setting, at the values of
  its best trial there (read from the source's committed results); {} when
  `setting` searches them itself."""
  if not setting.search.carried_from:
    return {}
  source = SETTINGS[setting.search.carried_from]
  _, selected = best_trial(source, source.results, loss)
  return {field: value for field, value in selected.items()
          if field in source.search.losses[loss]}


def loss_trials(setting: Setting, loss: str) -> list[dict[str, Any]]:
  """The config fields of `loss`'s tuning trials in `setting`."""
  carried = carried_hyperparameters(setting, loss)
  return [{**trial, **carried} for trial in setting.search.loss_trials(loss)]


def tuning_runs(setting: Setting) -> list[Run]:
  """Trial 0 of every loss, then trial 1 of every loss, ...: an interrupted
  search has given every loss the same number of trials, give or take one."""
  trials = {loss: loss_trials(setting, loss) for loss in setting.losses}
  return [Run(f"tuning/{loss}/trial{k}", "tuning", loss,
              {**setting.validation, **tuning_eval(setting),
               **trials[loss][k]}, setting=setting)
          for k in range(setting.search.trials) for loss in trials]


def _results(results_dir: str, path: str) -> Optional[dict]:
  target = workdir_lib.path(files.join(results_dir, path),
                            workdir_lib.RESULTS)
  return files.read_json(target) if files.exists(target) else None


def validation_map(result: dict) -> float:
  """A finished selection run's validation mAP; -inf for a diverged one."""
  return -math.inf if DIVERGED in result else result["exact"]["map"]


def best_trial(setting: Setting, results_dir: str, loss: str
               ) -> tuple[int, dict[str, Any]]:
  """(trial number, settings) of `loss`'s tuning trial with the best
  validation mAP; an error naming what is missing until all have run."""
  trials = loss_trials(setting, loss)
  scores = [_results(results_dir, f"tuning/{loss}/trial{k}")
            for k in range(len(trials))]
  missing = [k for k, r in enumerate(scores) if r is None]
  if missing:
    raise ValueError(f"the tuning of {loss!r} has not finished: trials"
                     f" {missing} have no results.json under"
                     f" {results_dir}/tuning/{loss}")
  if all(DIVERGED in r for r in scores):
    raise ValueError(f"every tuning trial of {loss!r} diverged under"
                     f" {results_dir}/tuning/{loss}: nothing to select")
  best = max(range(len(trials)), key=lambda k: validation_map(scores[k]))
  return best, trials[best]


# Variants of the class anchor margin loss (issue 14, item 6), each a
# function of its tuned settings and the recipe (embedding size D), tried
# under the tuning budget on seeds 0 and 1 against the tuned setting itself.
def _variants(tuned: dict[str, Any], recipe_fields: dict[str, Any]
              ) -> dict[str, dict[str, Any]]:
  margin = tuned.get("loss.margin", 1.0)
  dim = recipe_fields["model.embedding_dim"]
  return {
      # anchors start exactly 2 * margin apart (the repeller satisfied at
      # its boundary) with norm margin * sqrt(2)
      "orthogonal_init": {"model.anchor_init": "orthogonal",
                          "model.anchor_init_scale": margin * math.sqrt(
                              2.0 / dim)},
      # margin and minimum norm at the scale of the default N(0, 1)
      # anchors: 2m = sqrt(2D) (their typical distance), p = sqrt(D)
      # (their typical norm), so both terms act from the first step
      "margins_at_init_scale": {"loss.margin": math.sqrt(dim / 2.0),
                                "loss.min_norm": math.sqrt(dim)},
      # the attractor grows from 0 over the learning-rate warm-up, so the
      # anchors arrange themselves before embeddings are pulled onto them
      "attract_warmup": {"train.loss_warmup_steps":
                             recipe_fields["optim.warmup_steps"]},
      # from the gradients: once the anchors are 2m apart only the
      # attractor acts, blind to the other classes; the push keeps each
      # embedding m nearer its own anchor than any other (docs/losses.md)
      "push": {"loss.push_weight": 1.0},
  }


VARIANT_SEEDS = (0, 1)


def variant_changes(setting: Setting, results_dir: str
                    ) -> dict[str, dict[str, Any]]:
  """Each variant's config changes, and once the single variants have all
  run with two or more beating the tuned setting on both seeds,
  `rules.COMBINED`: all the winners' changes together."""
  _, tuned = best_trial(setting, results_dir, FOCUS)
  changes = _variants(tuned, setting.recipe)
  scores = variant_scores(setting, results_dir, changes)
  if all(len(row) == len(VARIANT_SEEDS) for row in scores.values()):
    winners = rules.variant_winners(scores)
    if len(winners) > 1:
      changes[rules.COMBINED] = {k: v for name in winners
                                  for k, v in changes[name].items()}
  return changes


def variant_runs(setting: Setting, results_dir: str) -> list[Run]:
  """The tuned class anchor margin loss again on seed 1 (seed 0 is its
  tuning trial), each variant on seeds 0 and 1, and the winners combined
  when there are several, on validation. Run the stage again after the
  single variants to run the combination."""
  _, tuned = best_trial(setting, results_dir, FOCUS)
  base = {**setting.validation, **tuning_eval(setting), **tuned}
  runs = [Run(f"variants/{FOCUS}/tuned/seed{seed}", "variants", FOCUS, base,
              seed, setting=setting)
          for seed in VARIANT_SEEDS if seed != 0]
  for name, change in variant_changes(setting, results_dir).items():
    runs += [Run(f"variants/{FOCUS}/{name}/seed{seed}", "variants", FOCUS,
                 {**base, **change}, seed, setting=setting)
             for seed in VARIANT_SEEDS]
  return runs


def variant_scores(setting: Setting, results_dir: str,
                   changes: dict[str, Any]) -> dict[str, dict[int, float]]:
  """Validation mAP per seed (those that ran) of the tuned setting and of
  the variants named in `changes`."""
  best, _ = best_trial(setting, results_dir, FOCUS)
  scores = {}
  for name in ("tuned", *changes):
    row = {}
    for seed in VARIANT_SEEDS:
      path = (f"tuning/{FOCUS}/trial{best}" if (name, seed) == ("tuned", 0)
              else f"variants/{FOCUS}/{name}/seed{seed}")
      result = _results(results_dir, path)
      if result:
        row[seed] = validation_map(result)
    scores[name] = row
  return scores


def adopted_variant(setting: Setting, results_dir: str) -> Optional[str]:
  """`rules.adopted_variant` on the variants' validation scores; None in a
  setting without variants; an error until every run it needs has
  finished."""
  if "variants" not in setting.stages:
    return None
  changes = variant_changes(setting, results_dir)
  scores = variant_scores(setting, results_dir, changes)
  if any(len(row) < len(VARIANT_SEEDS) for row in scores.values()):
    raise ValueError("the variants of the class anchor margin loss have not"
                     f" all run (--stage variants): {scores}")
  return rules.adopted_variant(scores)


def final_settings(setting: Setting, results_dir: str, loss: str, *,
                   variant: bool = False) -> dict[str, Any]:
  """A loss's selected settings under the budget every loss had: its best
  trial; with `variant`, for the focus loss, the adopted variant's changes
  too (a second selection round only the focus loss had)."""
  _, selected = best_trial(setting, results_dir, loss)
  if variant and loss == FOCUS:
    adopted = adopted_variant(setting, results_dir)
    if adopted:
      selected = {**selected,
                  **variant_changes(setting, results_dir)[adopted]}
  return selected


# Stage "length": a length has converged when the best baseline's
# validation mAP gains less than this over the last quarter of training.
CONVERGED = 0.01
FINAL_SEEDS = (0, 1, 2)
ABLATIONS = {"no_repel": {"loss.repel_weight": 0.0},
             "no_norm": {"loss.norm_weight": 0.0},
             "attract_only": {"loss.repel_weight": 0.0,
                              "loss.norm_weight": 0.0}}


def best_baseline(setting: Setting, results_dir: str) -> str:
  """The loss other than the class anchor margin loss with the best tuned
  validation mAP."""
  scores = {}
  for loss in setting.losses:
    if loss != FOCUS:
      best, _ = best_trial(setting, results_dir, loss)
      scores[loss] = validation_map(
          _results(results_dir, f"tuning/{loss}/trial{best}"))
  return max(scores, key=scores.get)


def _converged(results_dir: str, path: str) -> bool:
  """Whether the finished length run at `path` gained less than CONVERGED
  over its last quarter."""
  if _results(results_dir, path) is None:
    return False
  return rules.converged(_gain(results_dir, path), CONVERGED)


def _gain(results_dir: str, path: str) -> Optional[float]:
  """The length run at `path`: its gain over its last quarter."""
  return rules.last_quarter_gain(rules.validation_curve(
      files.join(results_dir, path)))


def _length_path(loss: str, epochs: int) -> str:
  return f"length/{loss}/epochs{epochs}"


def length_runs(setting: Setting, results_dir: str) -> list[Run]:
  """The best baseline and the class anchor margin loss, selected settings,
  on validation with a full validation evaluation every epoch, at each
  of the setting's lengths up to the first where the baseline converged."""
  leader = best_baseline(setting, results_dir)
  runs, shorter = [], ()
  for epochs in setting.length_epochs:
    for loss in (leader, FOCUS):
      runs.append(Run(_length_path(loss, epochs), "length", loss, {
          **setting.validation,
          **final_settings(setting, results_dir, loss, variant=True),
          "train.epochs": epochs,
          "eval.every": setting.steps_per_epoch("validation"),
          "eval.subset_queries": 0, "eval.subset_database": 0},
                      setting=setting, waits_for=shorter))
    if _converged(results_dir, _length_path(leader, epochs)):
      break
    shorter = (_length_path(leader, epochs),)
  return runs


def final_epochs(setting: Setting, results_dir: str) -> int:
  """The shortest of the setting's lengths at which the best baseline
  converged on validation, or the longest once it has run there without
  converging (the cap); an error until one of the two holds."""
  leader = best_baseline(setting, results_dir)
  paths = {epochs: _length_path(leader, epochs)
           for epochs in setting.length_epochs}
  gains = {epochs: _gain(results_dir, path) for epochs, path in paths.items()
           if _results(results_dir, path) is not None}
  chosen = rules.final_length(gains, setting.length_epochs, CONVERGED)
  if chosen:
    return chosen[0]
  raise ValueError(f"no length of {setting.length_epochs} epochs has"
                   f" converged for {leader!r} yet, and its longest has not"
                   " run (--stage length)")


# What every final run evaluates and keeps: per-query APs (paired tests),
# two-stage search by the loss's own class vectors and by the database's
# class centroids with both list sources, and the final parameters (the
# report's analyses redo from them).
FINAL_EVAL = {"eval.per_query": True, "eval.list_sources": ("labels",
                                                           "anchors"),
              "eval.class_vectors": ("learned", "centroids"),
              "train.save_params": True}


def _final(setting: Setting, results_dir: str, loss: str, epochs: int, *,
           variant: bool = False) -> dict[str, Any]:
  return {**final_settings(setting, results_dir, loss, variant=variant),
          "train.epochs": epochs,
          "eval.every": setting.steps_per_epoch("final"), **FINAL_EVAL}


def _few_shot(setting: Setting, selected: dict[str, Any], seed: int
              ) -> dict[str, Any]:
  """A final run's settings in the few-shot recipe; a warm-up of the loss
  (the attractor's) spans the recipe's learning-rate warm-up."""
  out = {**selected, **setting.few_shot, "dataset.shot_seed": seed}
  if out.get("train.loss_warmup_steps"):
    out["train.loss_warmup_steps"] = setting.few_shot["optim.warmup_steps"]
  return out


def _finals(setting: Setting, stage: str, loss: str,
            selected: dict[str, Any], seed: int) -> list[Run]:
  """`stage`/full/`loss`/seed and, where the setting has it, its 10-shot
  twin."""
  runs = [Run(f"{stage}/full/{loss}/seed{seed}", stage, loss, selected,
              seed, setting=setting)]
  if setting.few_shot:
    shot = setting.few_shot["dataset.shot"]
    runs.append(Run(f"{stage}/{shot}-shot/{loss}/seed{seed}", stage, loss,
                    _few_shot(setting, selected, seed), seed,
                    setting=setting))
  return runs


def final_runs(setting: Setting, results_dir: str) -> list[Run]:
  """The headline comparison: every loss with the settings its tuning
  trials selected (the same budget for every loss) on the test protocol,
  seeds FINAL_SEEDS, full training set and 10-shot (selection seed =
  seed). Seed by seed, the focus loss and the best baseline first, so that
  an interrupted stage has the headline comparison."""
  epochs = final_epochs(setting, results_dir)
  leader = best_baseline(setting, results_dir)
  order = sorted(setting.losses,
                 key=lambda loss: (loss != FOCUS, loss != leader))
  return [run for seed in FINAL_SEEDS for loss in order
          for run in _finals(setting, "final", loss,
                             _final(setting, results_dir, loss, epochs),
                             seed)]


def variant_final_runs(setting: Setting, results_dir: str) -> list[Run]:
  """The focus loss with its adopted variant (the extra selection round no
  other loss had), final protocol: reported beside the headline
  comparison, not in it."""
  selected = _final(setting, results_dir, FOCUS,
                    final_epochs(setting, results_dir), variant=True)
  return [run for seed in FINAL_SEEDS
          for run in _finals(setting, "variant_final", FOCUS, selected,
                             seed)]


def ablation_runs(setting: Setting, results_dir: str) -> list[Run]:
  """The focus loss's terms switched off, its recipe with the adopted
  variant (the configs'), seed 0 (the full loss is
  variant_final/full/cam/seed0)."""
  selected = _final(setting, results_dir, FOCUS,
                    final_epochs(setting, results_dir), variant=True)
  return [Run(f"ablation/{FOCUS}/{name}/seed0", "ablation", FOCUS,
              {**selected, **change}, setting=setting)
          for name, change in ABLATIONS.items()]


def diagnosis_runs(setting: Setting, results_dir: str) -> list[Run]:
  """Why cross-entropy ranks as it does (issue 14): its best trial again
  with BatchNorm on the embedding (the usual retrieval head for classifier
  training), same budget, on validation. Outside the equal-budget
  comparison. Where the embedding is taken is measured on the trial itself
  (`study.embedding_choices`, written to diagnosis/)."""
  _, selected = best_trial(setting, results_dir, "ce")
  return [Run("diagnosis/ce/head_batch_norm/seed0", "diagnosis", "ce",
              {**setting.validation, **tuning_eval(setting), **selected,
               "model.head_batch_norm": True}, setting=setting)]


STAGES = {"tuning": lambda setting, results_dir: tuning_runs(setting),
          "variants": variant_runs, "length": length_runs,
          "final": final_runs, "variant_final": variant_final_runs,
          "ablation": ablation_runs,
          "diagnosis": diagnosis_runs}


def plan(setting: Setting, stage: str, results_dir: str) -> list[Run]:
  """The runs of `stage` in `setting`; an error naming the setting's
  stages for one it does not have."""
  if stage not in setting.stages:
    raise ValueError(f"setting {setting.name!r} has no stage {stage!r};"
                     f" its stages: {', '.join(setting.stages)}")
  return STAGES[stage](setting, results_dir)


VARIANT_TEXT = {
    "orthogonal_init": "anchors start as orthogonal rows exactly 2 * margin"
                       " apart (norm margin * sqrt(2))",
    "margins_at_init_scale": "margin = sqrt(D/2) and min_norm = sqrt(D), the"
                             " typical half-distance and norm of N(0, 1)"
                             " anchors, so all three terms act at once",
    "attract_warmup": "the attractor's weight grows linearly from 0 over"
                      " the learning-rate warm-up",
    "push": "an added term (ours) pushes each embedding until it is margin"
            " nearer its own anchor than any other (push_weight = 1)",
    rules.COMBINED: "every variant better than the tuned setting on both"
                     " seeds, together (run only when there are several)",
}


def protocol(setting: Setting) -> dict[str, Any]:
  """The setting's protocol, as <results>/protocol.json states it."""
  out = {"setting": setting.name, "title": setting.title,
         "dataset": setting.dataset, "focus": FOCUS,
         "stages": list(setting.stages), "recipe": setting.recipe,
         "validation": setting.validation,
         "tuning_epochs": setting.tuning_epochs,
         "search": setting.search.describe(),
         "length_epochs": list(setting.length_epochs),
         "converged_gain": CONVERGED, "final_seeds": list(FINAL_SEEDS),
         "few_shot": setting.few_shot}
  if setting.search.carried_from:
    out["carried"] = {loss: carried_hyperparameters(setting, loss)
                      for loss in setting.losses}
  if "variants" in setting.stages:
    out.update(variant_seeds=list(VARIANT_SEEDS), variants=VARIANT_TEXT)
  if "ablation" in setting.stages:
    out["ablations"] = ABLATIONS
  if setting.targets:
    out["targets"] = setting.targets
  return out


def done(results_dir: str, run: Run) -> bool:
  return files.exists(workdir_lib.path(files.join(results_dir, run.path),
                                       workdir_lib.RESULTS))


def keep(workdir: str, results_dir: str, run: Run) -> None:
  """Copies the finished run's small files to `results_dir/run.path`,
  results.json last (it marks the run as done)."""
  files.write_json(workdir_lib.path(workdir, workdir_lib.STUDY_RECORD),
                   run.record())
  target = files.join(results_dir, run.path)
  files.makedirs(target)
  for name in sorted(KEPT_FILES, key=lambda n: n == workdir_lib.RESULTS):
    source = files.join(workdir, name)
    if files.exists(source):
      with files.open_file(source, "rb") as f:
        content = f.read()
      with files.atomic_write(files.join(target, name), "wb") as f:
        f.write(content)


def diagnosis_path(run: Run) -> Optional[str]:
  """Where `run`'s embedding choices are kept, relative to --results; None
  for runs that are not diagnosed (the final full-set runs of the losses
  in `Setting.diagnosed`: the head on the unit sphere, the backbone and the
  logits, measured right after training while the checkpoint is here;
  cross-entropy ranks in L2 as declared, and the diagnosis showed cosine
  ranking changes it most)."""
  if run.stage != "final" or run.loss not in run.setting.diagnosed or not (
      run.path.startswith("final/full/")):
    return None
  return f"diagnosis/embedding_choices_{run.loss}_final_seed{run.seed}.json"


# Stages whose runs are selection runs: one that diverges is recorded as
# such (and ranks last) instead of stopping the stage.
SELECTION_STAGES = ("tuning", "variants")


def _diverged(workdir: str, error: Exception) -> dict[str, Any]:
  """The results.json of a selection run whose loss turned non-finite."""
  results = {DIVERGED: str(error), "steps": error.step}
  files.write_json(workdir_lib.path(workdir, workdir_lib.RESULTS), results)
  return results


def _claim_next(runs: list[Run], pending: list[int], results_dir: str,
                workdirs: str) -> Optional[int]:
  """The first pending run that may start (what it waits for is done) and
  that this process could claim; None when every such run is another
  worker's."""
  for i in pending:
    run = runs[i]
    if any(_results(results_dir, p) is None for p in run.waits_for):
      continue
    if claims.claim(workdirs, run.path):
      if not done(results_dir, run):  # finished since `pending` was read
        return i
      claims.release(run.path)
  return None


def run_stage(setting: Setting, stage: str, results_dir: str, workdirs: str,
              *, only: str = "", train: Optional[Callable] = None,
              diagnose: Optional[Callable] = None,
              dataset: Optional[Callable] = None,
              poll_seconds: float = 30.0) -> list[str]:
  """Trains the stage's unfinished runs (paths containing `only`) one at a
  time and keeps each one's files; returns the paths trained. The stage is
  planned again after every run, because a run's result can change the
  plan (a converged length makes the longer lengths unnecessary). Several
  processes may run the same stage on one machine: each claims the run it
  trains (study/claims.py) and starts a run only once the runs it
  `waits_for` are done; one that finds every startable run claimed looks
  again every `poll_seconds`, and returns when the stage has nothing left.
  `train(config, workdir) -> results` defaults to the trainer;
  `diagnose(workdir) -> dict` (for diagnosed runs) to
  `study.embedding_choices`; `dataset(config) -> dict` (what the runs
  train on, checked against the setting's `dataset_record` before the
  first run) to `dataset_record.describe`."""
  from ra_jax.training.loop import NonFiniteLossError
  if train is None:
    from ra_jax.training import loop
    train = loop.train_and_evaluate
  if diagnose is None:
    from study import embedding_choices
    diagnose = embedding_choices.embedding_choices
  dataset = dataset or dataset_record.describe
  plan(setting, stage, results_dir)  # the setting has the stage
  files.makedirs(results_dir)
  files.write_json(files.join(results_dir, "protocol.json"),
                   protocol(setting))
  start, trained, checked = time.time(), [], False
  while True:
    runs = [r for r in plan(setting, stage, results_dir) if only in r.path]
    pending = [i for i, r in enumerate(runs) if not done(results_dir, r)]
    if not pending:
      return trained
    index = _claim_next(runs, pending, results_dir, workdirs)
    if index is None:  # every startable run is another worker's
      time.sleep(poll_seconds)
      continue
    run = runs[index]
    # A result that came in since `runs` was planned (what it waited for)
    # can have made it unnecessary: plan again now that it is claimed.
    if run.path not in {r.path for r in plan(setting, stage, results_dir)}:
      claims.release(run.path)
      continue
    try:
      if not checked:  # the setting's runs share one dataset
        # one worker at a time: the first may be building it
        with claims.exclusive(workdirs, "dataset"):
          dataset_record.check(results_dir, dataset(run.config()))
        checked = True
      print(f"[{index + 1}/{len(runs)}] {setting.name}: {run.path}",
            flush=True)
      workdir = os.path.join(workdirs, run.path)
      try:
        results = train(run.config(), workdir)
      except NonFiniteLossError as e:
        if stage not in SELECTION_STAGES:
          raise
        results = _diverged(workdir, e)
      dataset_record.check_run(results_dir, results)
      diagnosis = diagnosis_path(run)
      if diagnosis:  # before keep(): then the run counts as done
        files.write_json(files.join(results_dir, diagnosis),
                         diagnose(workdir))
      keep(workdir, results_dir, run)
    finally:
      claims.release(run.path)
    trained.append(run.path)
    print("    " + (f"diverged at step {results['steps']}"
                    if DIVERGED in results else
                    f"mAP {results['exact']['map']:.4f}, P@10"
                    f" {results['exact']['precision@10']:.4f}")
          + f", {time.time() - start:.0f} s so far", flush=True)


def worker_cores(workers: int, cores: list[int]) -> list[set[int]]:
  """The cores each of `workers` processes is pinned to: equal contiguous
  shares of `cores`, the remainder unused (equal shares keep every run's
  thread count, and so its floating-point results, the same)."""
  share = len(cores) // workers
  if share < 1:
    raise ValueError(f"--workers {workers}: only {len(cores)} cores")
  return [set(cores[i * share:(i + 1) * share]) for i in range(workers)]


def run_workers(args: argparse.Namespace, workdirs: str) -> int:
  """Runs study.grid with `args` as `args.workers` processes, each pinned
  to its cores (`worker_cores`), their output in `workdirs`/worker<i>.log;
  waits for all of them. Exit status: 1 if any failed."""
  import subprocess
  argv = ["--setting", args.setting, "--stage", args.stage, "--only",
          args.only, "--workdirs", workdirs]
  if args.results:
    argv += ["--results", args.results]
  files.makedirs(workdirs)
  procs = []
  for i, cores in enumerate(worker_cores(
      args.workers, sorted(os.sched_getaffinity(0)))):
    log = os.path.join(workdirs, f"worker{i}.log")
    with open(log, "a") as out:
      procs.append((log, subprocess.Popen(
          [sys.executable, "-m", "study.grid", *argv], stdout=out,
          stderr=subprocess.STDOUT,
          preexec_fn=lambda cores=cores: os.sched_setaffinity(0, cores))))
    print(f"study.grid: worker {i} on cores {sorted(cores)}, log {log}",
          flush=True)
  failed = [log for log, proc in procs if proc.wait()]
  for log in failed:
    print(f"study.grid: a worker failed; see {log}", file=sys.stderr)
  return 1 if failed else 0


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--setting", default="fashion_mnist",
                      choices=sorted(SETTINGS))
  parser.add_argument("--stage", required=True, choices=sorted(STAGES))
  parser.add_argument("--workdirs", help="default: the setting's, runs/...")
  parser.add_argument("--results",
                      help="default: the setting's, e.g. results/grid")
  parser.add_argument("--only", default="", help="run paths containing this")
  parser.add_argument("--dry-run", action="store_true")
  parser.add_argument(
      "--workers", type=int, default=1,
      help="train N runs at once, each worker pinned to its share of the"
      " cores (default 1: one process on every core). Pinning changes the"
      " floating-point results (XLA's CPU code follows the thread count), so"
      " a setting's runs should share one arrangement; results.json records"
      " each run's cores, and study.reproduce pins to them")
  args = parser.parse_args()
  setting = SETTINGS[args.setting]
  results_dir = args.results or setting.results
  try:  # a stage the setting lacks, or whose inputs have not all run
    runs = [r for r in plan(setting, args.stage, results_dir)
            if args.only in r.path]
  except ValueError as e:
    parser.exit(2, f"study.grid: {e}\n")
  if args.dry_run:
    for run in runs:
      print(run.path, "done" if done(results_dir, run) else "to run",
            json.dumps(run.settings))
    print(f"{len(runs)} runs, {sum(done(results_dir, r) for r in runs)}"
          " done")
    return 0
  if args.workers > 1:
    return run_workers(args, args.workdirs or setting.workdirs)
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  try:
    run_stage(setting, args.stage, results_dir,
              args.workdirs or setting.workdirs, only=args.only)
  except dataset_record.DatasetChangedError as e:
    parser.exit(2, f"study.grid: {e}\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
