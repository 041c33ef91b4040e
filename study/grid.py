"""The experiments behind docs/RESULTS.md (issue 14), resumable across
interruptions and machines:

  python -m study.grid --stage STAGE [--only cam/] [--dry-run]
  python -m study.report --results results/grid --output docs/RESULTS.md

STAGE, in order (each reads what the ones before selected, from the
committed results, and says what is missing if they have not finished):
tuning, variants, length, final, variant_final, ablation, diagnosis.

Protocol (Fashion-MNIST; written to results/grid/protocol.json):
- Every loss trains with the same RECIPE: ResNet-18 (CIFAR stem) at width
  8, 128-d embeddings, batches of 25 images of each of the 10 classes (for
  every loss, so the sampler is no confound), the fashion_mnist
  augmentation, warm-up then cosine decay; each in the geometry its loss
  declares (`loss.geometry`, default from the registry).
- Model selection never sees the test split: a stratified 10,000 of the
  60,000 training images (validation_seed 0) are the queries, the other
  50,000 are the training data and the database.
- Stage "tuning": TUNING_EPOCHS epochs per trial, `search_spaces.TRIALS`
  trials per loss from `search_spaces` (the same optimizers and learning
  rates for every loss); the trial with the best validation mAP is the
  loss's tuned setting.
- "variants": the class anchor margin loss's variants (VARIANT_TEXT) under
  the same budget, seeds 0 and 1; one is adopted only if it beats the tuned
  setting on both seeds.
- "length": the best baseline and the class anchor margin loss at
  LENGTH_EPOCHS, evaluated on the whole validation split every epoch; the
  final length is the shortest at which the baseline's validation mAP
  gains less than CONVERGED over the last quarter of training.
- "final": the headline comparison, under the same selection budget for
  every loss (its 8 trials): each loss's best trial, final length, test
  protocol (queries = test split, database = training split), seeds 0-2,
  full training set and 10-shot (configs/fashion_mnist.py:shot=10);
  per-query APs, two-stage search by each loss's class vectors and by the
  database's class centroids, and the final parameters kept.
- "variant_final": the focus loss with its adopted variant, the same
  final runs: the variant's gain, reported with its extra budget, outside
  the headline comparison.
- "ablation": the focus loss's terms switched off, variant recipe (seed 0).
- "diagnosis": cross-entropy's best trial with BatchNorm on the embedding
  (outside the equal-budget comparison); with
  `python -m study.embedding_choices --workdir runs/grid/tuning/ce/trialK
  --out results/grid/diagnosis/embedding_choices_ce.json`, where its
  embedding is taken. The final stage measures the same for each final
  cross-entropy run (DIAGNOSED) as soon as it has trained.

A run's work dir (checkpoints included) is `--workdirs/<path>`; once it
has finished, its small files (results.json, config.json, metrics.jsonl,
grid.json, and the final runs' params.msgpack) are copied to
`--results/<path>`, which is what gets committed and what marks the run as
done on any machine.
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

from configs import fashion_mnist
from configs.common import set_fields
from ra_jax import files
from ra_jax.training import workdir as workdir_lib
from study import rules
from study import search_spaces

# The loss the study is about: its variants are tried, its terms ablated,
# and the report's verdicts compare it with every other loss.
FOCUS = "cam"

# The training recipe every loss shares.
RECIPE = {
    "model.name": "resnet18_cifar", "model.width": 8,
    "model.embedding_dim": 128, "train.global_batch_size": 250,
    "dataset.images_per_class": 25, "optim.name": "adamw",
    "optim.learning_rate": 1e-3, "optim.weight_decay": 0.0,
    "optim.warmup_steps": 100, "train.epochs": 6, "train.log_every": 50,
    "train.checkpoint_every": 200, "eval.two_stage_lists": (1, 2, 3),
    # Fields whose config defaults adopt the grid's selections (configs/
    # validated.py), pinned at the values the protocol started from so
    # that adopting them does not change the runs it plans.
    "optim.momentum": 0.9, "optim.nesterov": False,
    "optim.anchor_lr_mult": 1.0, "model.anchor_init": "normal",
    "model.anchor_init_scale": 1.0, "train.loss_warmup_steps": 0,
}
# The same, for the hyperparameters of one loss outside its search space.
LOSS_RECIPE = {FOCUS: {"loss.attract_weight": 1.0, "loss.push_weight": 0.0,
                       "loss.repel_weight": 1.0, "loss.norm_weight": 1.0}}
VALIDATION = {"dataset.validation_examples": 10000,
              "dataset.validation_seed": 0}
TUNING_EPOCHS = 2
# Tuning and variant runs are selected on exact-search validation mAP only:
# no evaluation during training, no two-stage search at the end.
TUNING_EVAL = {"train.epochs": TUNING_EPOCHS, "eval.every": 0,
               "eval.two_stage_lists": ()}
# The files of a finished run that are committed under --results.
KEPT_FILES = (workdir_lib.RESULTS, workdir_lib.CONFIG, workdir_lib.METRICS,
              workdir_lib.STUDY_RECORD, workdir_lib.PARAMS)


def recipe(loss: str, dataset: str = "fashion_mnist"):
  """The `dataset` config of `loss` with RECIPE applied."""
  config = importlib.import_module(f"configs.{dataset}").get_config(
      f"loss={loss}")
  set_fields(config, {**RECIPE, **LOSS_RECIPE.get(loss, {})})
  return config


@dataclasses.dataclass
class Run:
  path: str  # <stage>/<loss>/<name>, relative to --workdirs and --results
  stage: str
  loss: str
  settings: dict[str, Any]  # dotted config fields over the recipe
  seed: int = 0

  def config(self):
    config = recipe(self.loss)
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


def tuning_runs() -> list[Run]:
  """Trial 0 of every loss, then trial 1 of every loss, ...: an interrupted
  search has given every loss the same number of trials, give or take one."""
  trials = {loss: search_spaces.loss_trials(loss)
            for loss in search_spaces.LOSS_SPACES}
  return [Run(f"tuning/{loss}/trial{k}", "tuning", loss,
              {**VALIDATION, **TUNING_EVAL, **trials[loss][k]})
          for k in range(search_spaces.TRIALS) for loss in trials]


def _results(results_dir: str, path: str) -> Optional[dict]:
  target = workdir_lib.path(files.join(results_dir, path),
                            workdir_lib.RESULTS)
  return files.read_json(target) if files.exists(target) else None


def best_trial(results_dir: str, loss: str) -> tuple[int, dict[str, Any]]:
  """(trial number, settings) of `loss`'s tuning trial with the best
  validation mAP; an error naming what is missing until all have run."""
  trials = search_spaces.loss_trials(loss)
  scores = [_results(results_dir, f"tuning/{loss}/trial{k}")
            for k in range(len(trials))]
  missing = [k for k, r in enumerate(scores) if r is None]
  if missing:
    raise ValueError(f"the tuning of {loss!r} has not finished: trials"
                     f" {missing} have no results.json under"
                     f" {results_dir}/tuning/{loss}")
  best = max(range(len(trials)), key=lambda k: scores[k]["exact"]["map"])
  return best, trials[best]


# Variants of the class anchor margin loss (issue 14, item 6), each a
# function of its tuned settings and the embedding size D, tried under the
# tuning budget on seeds 0 and 1 against the tuned setting itself.
def _variants(tuned: dict[str, Any], dim: int) -> dict[str, dict[str, Any]]:
  margin = tuned.get("loss.margin", 1.0)
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
                             RECIPE["optim.warmup_steps"]},
      # from the gradients: once the anchors are 2m apart only the
      # attractor acts, blind to the other classes; the push keeps each
      # embedding m nearer its own anchor than any other (docs/losses.md)
      "push": {"loss.push_weight": 1.0},
  }


VARIANT_SEEDS = (0, 1)


def variant_changes(results_dir: str) -> dict[str, dict[str, Any]]:
  """Each variant's config changes, and once the single variants have all
  run with two or more beating the tuned setting on both seeds,
  `rules.COMBINED`: all the winners' changes together."""
  _, tuned = best_trial(results_dir, FOCUS)
  changes = _variants(tuned, RECIPE["model.embedding_dim"])
  scores = variant_scores(results_dir, changes)
  if all(len(row) == len(VARIANT_SEEDS) for row in scores.values()):
    winners = rules.variant_winners(scores)
    if len(winners) > 1:
      changes[rules.COMBINED] = {k: v for name in winners
                                  for k, v in changes[name].items()}
  return changes


def variant_runs(results_dir: str) -> list[Run]:
  """The tuned class anchor margin loss again on seed 1 (seed 0 is its
  tuning trial), each variant on seeds 0 and 1, and the winners combined
  when there are several, on validation. Run the stage again after the
  single variants to run the combination."""
  best, tuned = best_trial(results_dir, FOCUS)
  base = {**VALIDATION, **TUNING_EVAL, **tuned}
  runs = [Run(f"variants/{FOCUS}/tuned/seed{seed}", "variants", FOCUS, base,
              seed) for seed in VARIANT_SEEDS if seed != 0]
  for name, change in variant_changes(results_dir).items():
    runs += [Run(f"variants/{FOCUS}/{name}/seed{seed}", "variants", FOCUS,
                 {**base, **change}, seed) for seed in VARIANT_SEEDS]
  return runs


def variant_scores(results_dir: str, changes: dict[str, Any]
                   ) -> dict[str, dict[int, float]]:
  """Validation mAP per seed (those that ran) of the tuned setting and of
  the variants named in `changes`."""
  best, _ = best_trial(results_dir, FOCUS)
  scores = {}
  for name in ("tuned", *changes):
    row = {}
    for seed in VARIANT_SEEDS:
      path = (f"tuning/cam/trial{best}" if (name, seed) == ("tuned", 0) else
              f"variants/cam/{name}/seed{seed}")
      result = _results(results_dir, path)
      if result:
        row[seed] = result["exact"]["map"]
    scores[name] = row
  return scores


def adopted_variant(results_dir: str) -> Optional[str]:
  """`rules.adopted_variant` on the variants' validation scores; an error
  until every run it needs has finished."""
  changes = variant_changes(results_dir)
  scores = variant_scores(results_dir, changes)
  if any(len(row) < len(VARIANT_SEEDS) for row in scores.values()):
    raise ValueError("the variants of the class anchor margin loss have not"
                     f" all run (--stage variants): {scores}")
  return rules.adopted_variant(scores)


def final_settings(results_dir: str, loss: str, *,
                   variant: bool = False) -> dict[str, Any]:
  """A loss's selected settings under the budget every loss had: its best
  trial; with `variant`, for the focus loss, the adopted variant's changes
  too (a second selection round only the focus loss had)."""
  _, settings = best_trial(results_dir, loss)
  if variant and loss == FOCUS:
    variant = adopted_variant(results_dir)
    if variant:
      settings = {**settings, **variant_changes(results_dir)[variant]}
  return settings


# Stage "length": the training lengths tried, shortest first, until the
# best baseline's validation mAP gains less than CONVERGED over the last
# quarter of training.
LENGTH_EPOCHS = (12, 24)
CONVERGED = 0.01
# Final runs: seeds, and the 10-shot setting: configs/fashion_mnist.py's
# few-shot recipe (100 training images drawn away from the validation
# hold-out; batches of 10 images of each class, a fixed number of steps), so
# that `configs/fashion_mnist.py:shot=10` is what the final runs train.
FINAL_SEEDS = (0, 1, 2)
FEW_SHOT = {"dataset.shot": 10, **fashion_mnist.few_shot(10)}
# Issue 14's targets for the final full-set runs (test protocol, mean over
# seeds); the report says which were met, and by how much others missed.
TARGETS = {"group": "final/full",
           "best_baseline": {"map": 0.85, "precision@10": 0.88},
           "focus": {"map": 0.87, "precision@10": 0.89},
           "focus_two_stage_1": {"map": 0.93, "distance_fraction": 0.1}}
ABLATIONS = {"no_repel": {"loss.repel_weight": 0.0},
             "no_norm": {"loss.norm_weight": 0.0},
             "attract_only": {"loss.repel_weight": 0.0,
                              "loss.norm_weight": 0.0}}


def _steps_per_epoch(examples: int) -> int:
  return examples // RECIPE["train.global_batch_size"]


def best_baseline(results_dir: str) -> str:
  """The loss other than the class anchor margin loss with the best tuned
  validation mAP."""
  scores = {}
  for loss in search_spaces.LOSS_SPACES:
    if loss != FOCUS:
      best, _ = best_trial(results_dir, loss)
      scores[loss] = _results(results_dir,
                              f"tuning/{loss}/trial{best}")["exact"]["map"]
  return max(scores, key=scores.get)


def _converged(results_dir: str, path: str) -> bool:
  """Whether the finished length run at `path` gained less than CONVERGED
  over its last quarter."""
  if _results(results_dir, path) is None:
    return False
  gain = rules.last_quarter_gain(rules.validation_curve(
      files.join(results_dir, path)))
  return gain is not None and gain < CONVERGED


def _length_path(loss: str, epochs: int) -> str:
  return f"length/{loss}/epochs{epochs}"


def length_runs(results_dir: str) -> list[Run]:
  """The best baseline and the class anchor margin loss, selected settings,
  on validation with a full validation evaluation every epoch, at each
  length of LENGTH_EPOCHS up to the first where the baseline converged."""
  leader = best_baseline(results_dir)
  runs = []
  for epochs in LENGTH_EPOCHS:
    for loss in (leader, FOCUS):
      runs.append(Run(_length_path(loss, epochs), "length", loss, {
          **VALIDATION, **final_settings(results_dir, loss, variant=True),
          "train.epochs": epochs,
          "eval.every": _steps_per_epoch(50000),
          "eval.subset_queries": 0, "eval.subset_database": 0}))
    if _converged(results_dir, _length_path(leader, epochs)):
      break
  return runs


def final_epochs(results_dir: str) -> int:
  """The shortest length of LENGTH_EPOCHS at which the best baseline
  converged on validation; an error until one has."""
  leader = best_baseline(results_dir)
  for epochs in LENGTH_EPOCHS:
    if _converged(results_dir, _length_path(leader, epochs)):
      return epochs
  raise ValueError(f"no length of {LENGTH_EPOCHS} epochs has converged for"
                   f" {leader!r} yet (--stage length)")


# What every final run evaluates and keeps: per-query APs (paired tests),
# two-stage search by the loss's own class vectors and by the database's
# class centroids with both list sources, and the final parameters (the
# report's analyses redo from them).
FINAL_EVAL = {"eval.per_query": True, "eval.list_sources": ("labels",
                                                           "anchors"),
              "eval.class_vectors": ("learned", "centroids"),
              "train.save_params": True}


def _final(results_dir: str, loss: str, epochs: int, *,
           variant: bool = False) -> dict[str, Any]:
  return {**final_settings(results_dir, loss, variant=variant),
          "train.epochs": epochs, "eval.every": _steps_per_epoch(60000),
          **FINAL_EVAL}


def _few_shot(settings: dict[str, Any], seed: int) -> dict[str, Any]:
  """A final run's settings in the few-shot recipe; a warm-up of the loss
  (the attractor's) spans the recipe's learning-rate warm-up."""
  out = {**settings, **FEW_SHOT, "dataset.shot_seed": seed}
  if out.get("train.loss_warmup_steps"):
    out["train.loss_warmup_steps"] = FEW_SHOT["optim.warmup_steps"]
  return out


def _finals(stage: str, loss: str, settings: dict[str, Any], seed: int
            ) -> list[Run]:
  """`stage`/full/`loss`/seed and its 10-shot twin."""
  return [Run(f"{stage}/full/{loss}/seed{seed}", stage, loss, settings,
              seed),
          Run(f"{stage}/10-shot/{loss}/seed{seed}", stage, loss,
              _few_shot(settings, seed), seed)]


def final_runs(results_dir: str) -> list[Run]:
  """The headline comparison: every loss with the settings its 8 trials
  selected (the same budget for every loss) on the test protocol, seeds
  FINAL_SEEDS, full training set and 10-shot (selection seed = seed).
  Seed by seed, the focus loss and the best baseline first, so that an
  interrupted stage has the headline comparison."""
  epochs = final_epochs(results_dir)
  leader = best_baseline(results_dir)
  order = sorted(search_spaces.LOSS_SPACES,
                 key=lambda loss: (loss != FOCUS, loss != leader))
  return [run for seed in FINAL_SEEDS for loss in order
          for run in _finals("final", loss, _final(results_dir, loss, epochs),
                             seed)]


def variant_final_runs(results_dir: str) -> list[Run]:
  """The focus loss with its adopted variant (the extra selection round no
  other loss had), final protocol: reported beside the headline
  comparison, not in it."""
  settings = _final(results_dir, FOCUS, final_epochs(results_dir),
                    variant=True)
  return [run for seed in FINAL_SEEDS
          for run in _finals("variant_final", FOCUS, settings, seed)]


def ablation_runs(results_dir: str) -> list[Run]:
  """The focus loss's terms switched off, its recipe with the adopted
  variant (the configs'), seed 0 (the full loss is
  variant_final/full/cam/seed0)."""
  settings = _final(results_dir, FOCUS, final_epochs(results_dir),
                    variant=True)
  return [Run(f"ablation/{FOCUS}/{name}/seed0", "ablation", FOCUS,
              {**settings, **change}) for name, change in ABLATIONS.items()]


def diagnosis_runs(results_dir: str) -> list[Run]:
  """Why cross-entropy ranks as it does (issue 14): its best trial again
  with BatchNorm on the embedding (the usual retrieval head for classifier
  training), same budget, on validation. Outside the equal-budget
  comparison. Where the embedding is taken is measured on the trial itself
  (`study.embedding_choices`, written to diagnosis/)."""
  _, settings = best_trial(results_dir, "ce")
  return [Run("diagnosis/ce/head_batch_norm/seed0", "diagnosis", "ce",
              {**VALIDATION, **TUNING_EVAL, **settings,
               "model.head_batch_norm": True})]


STAGES = {"tuning": lambda results_dir: tuning_runs(),
          "variants": variant_runs, "length": length_runs,
          "final": final_runs, "variant_final": variant_final_runs,
          "ablation": ablation_runs,
          "diagnosis": diagnosis_runs}


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


def protocol() -> dict[str, Any]:
  return {"focus": FOCUS, "stages": list(STAGES), "recipe": RECIPE, "validation": VALIDATION,
          "tuning_epochs": TUNING_EPOCHS, "search": search_spaces.describe(),
          "variant_seeds": list(VARIANT_SEEDS), "variants": VARIANT_TEXT,
          "length_epochs": list(LENGTH_EPOCHS), "converged_gain": CONVERGED,
          "final_seeds": list(FINAL_SEEDS), "few_shot": FEW_SHOT,
          "ablations": ABLATIONS, "targets": TARGETS}


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


# Final full-set runs whose embedding is also measured elsewhere (the
# head on the unit sphere, the backbone, the logits) right after training,
# while the checkpoint is on this machine: cross-entropy ranks in L2 as
# declared, and the diagnosis showed cosine ranking changes it most.
DIAGNOSED = ("ce",)


def diagnosis_path(run: Run) -> Optional[str]:
  """Where `run`'s embedding choices are kept, relative to --results; None
  for runs that are not diagnosed."""
  if run.stage != "final" or run.loss not in DIAGNOSED or not (
      run.path.startswith("final/full/")):
    return None
  return f"diagnosis/embedding_choices_{run.loss}_final_seed{run.seed}.json"


def run_stage(stage: str, results_dir: str, workdirs: str, *,
              only: str = "", train: Optional[Callable] = None,
              diagnose: Optional[Callable] = None) -> list[str]:
  """Trains the stage's unfinished runs (paths containing `only`) one at a
  time and keeps each one's files; returns the paths trained. The stage is
  planned again after every run, because a run's result can change the
  plan (a converged length makes the longer lengths unnecessary).
  `train(config, workdir) -> results` defaults to the trainer;
  `diagnose(workdir) -> dict` (for DIAGNOSED runs) to
  `study.embedding_choices`."""
  if train is None:
    from ra_jax.training import loop
    train = loop.train_and_evaluate
  if diagnose is None:
    from study import embedding_choices
    diagnose = embedding_choices.embedding_choices
  files.makedirs(results_dir)
  files.write_json(files.join(results_dir, "protocol.json"), protocol())
  start, trained = time.time(), []
  while True:
    runs = [r for r in STAGES[stage](results_dir) if only in r.path]
    pending = [i for i, r in enumerate(runs) if not done(results_dir, r)]
    if not pending:
      return trained
    run = runs[pending[0]]
    print(f"[{pending[0] + 1}/{len(runs)}] {run.path}", flush=True)
    workdir = os.path.join(workdirs, run.path)
    results = train(run.config(), workdir)
    diagnosis = diagnosis_path(run)
    if diagnosis:  # before keep(): then the run counts as done
      files.write_json(files.join(results_dir, diagnosis), diagnose(workdir))
    keep(workdir, results_dir, run)
    trained.append(run.path)
    print(f"    mAP {results['exact']['map']:.4f}, P@10"
          f" {results['exact']['precision@10']:.4f},"
          f" {time.time() - start:.0f} s so far", flush=True)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--stage", required=True, choices=sorted(STAGES))
  parser.add_argument("--workdirs", default="runs/grid")
  parser.add_argument("--results", default="results/grid")
  parser.add_argument("--only", default="", help="run paths containing this")
  parser.add_argument("--dry-run", action="store_true")
  args = parser.parse_args()
  if args.dry_run:
    runs = [r for r in STAGES[args.stage](args.results)
            if args.only in r.path]
    for run in runs:
      print(run.path, "done" if done(args.results, run) else "to run",
            json.dumps(run.settings))
    print(f"{len(runs)} runs, {sum(done(args.results, r) for r in runs)}"
          " done")
    return 0
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  run_stage(args.stage, args.results, args.workdirs, only=args.only)
  return 0


if __name__ == "__main__":
  sys.exit(main())
