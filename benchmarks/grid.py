"""The experiments behind docs/RESULTS.md (issue 14), resumable across
interruptions and machines:

  python -m benchmarks.grid --stage tuning [--only cam/] [--dry-run]
  python -m ra_jax.report --workdir results/grid --output docs/RESULTS.md

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

A run's work dir (checkpoints included) is `--workdirs/<path>`; once it
has finished, its small files (results.json, config.json, metrics.jsonl,
grid.json) are copied to `--results/<path>`, which is what gets committed
and what marks the run as done on any machine.
"""

import argparse
import ast
import dataclasses
import importlib
import json
import os
import sys
import time
from typing import Any, Iterable

from benchmarks import search_spaces
from ra_jax import files

# The training recipe every loss shares.
RECIPE = {
    "model.name": "resnet18_cifar", "model.width": 8,
    "model.embedding_dim": 128, "train.global_batch_size": 250,
    "dataset.images_per_class": 25, "optim.name": "adamw",
    "optim.learning_rate": 1e-3, "optim.weight_decay": 0.0,
    "optim.warmup_steps": 100, "train.epochs": 6, "train.log_every": 50,
    "train.checkpoint_every": 200, "eval.two_stage_lists": (1, 2, 3),
}
VALIDATION = {"dataset.validation_examples": 10000,
              "dataset.validation_seed": 0}
TUNING_EPOCHS = 2
# The files of a finished run that are committed under --results.
KEPT_FILES = ("results.json", "config.json", "metrics.jsonl", "grid.json")


def recipe(loss: str, dataset: str = "fashion_mnist"):
  """The `dataset` config of `loss` with RECIPE applied."""
  config = importlib.import_module(f"configs.{dataset}").get_config(
      f"loss={loss}")
  set_fields(config, RECIPE)
  return config


def set_fields(config, settings: dict[str, Any]) -> None:
  """Sets dotted fields ("optim.learning_rate") that must already exist
  (ml_collections' update_from_flattened_dict would add a misspelt one)."""
  for field, value in settings.items():
    *sections, key = field.split(".")
    node = config
    for section in sections:
      if section not in node:
        raise KeyError(f"config field {field!r}: no section {section!r}")
      node = node[section]
    if key not in node:
      raise KeyError(f"config field {field!r} does not exist;"
                     f" {'.'.join(sections)} has: {', '.join(sorted(node))}")
  config.update_from_flattened_dict(settings)


def apply_overrides(config, overrides: Iterable[str]) -> None:
  """`FIELD=VALUE` strings (VALUE a Python literal, else a string) onto
  `config`; unknown fields are errors naming them."""
  settings = {}
  for item in overrides:
    field, sep, text = item.partition("=")
    if not sep:
      raise ValueError(f"override {item!r}: expected FIELD=VALUE")
    try:
      settings[field] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      settings[field] = text
  set_fields(config, settings)


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
    return {"path": self.path, "stage": self.stage, "loss": self.loss,
            "seed": self.seed, "settings": self.settings,
            "variant": self.path.split("/")[-1]}


def tuning_runs() -> list[Run]:
  """Trial 0 of every loss, then trial 1 of every loss, ...: an interrupted
  search has given every loss the same number of trials, give or take one."""
  trials = {loss: search_spaces.loss_trials(loss)
            for loss in search_spaces.LOSS_SPACES}
  return [Run(f"tuning/{loss}/trial{k}", "tuning", loss,
              {**VALIDATION, "train.epochs": TUNING_EPOCHS, "eval.every": 0,
               **trials[loss][k]})
          for k in range(search_spaces.TRIALS) for loss in trials]


STAGES = {"tuning": tuning_runs}


def protocol() -> dict[str, Any]:
  return {"recipe": RECIPE, "validation": VALIDATION,
          "tuning_epochs": TUNING_EPOCHS, "search": search_spaces.describe()}


def done(results_dir: str, run: Run) -> bool:
  return files.exists(files.join(results_dir, run.path, "results.json"))


def keep(workdir: str, results_dir: str, run: Run) -> None:
  """Copies the finished run's small files to `results_dir/run.path`,
  results.json last (it marks the run as done)."""
  files.write_json(files.join(workdir, "grid.json"), run.record())
  target = files.join(results_dir, run.path)
  files.makedirs(target)
  for name in sorted(KEPT_FILES, key=lambda n: n == "results.json"):
    source = files.join(workdir, name)
    if files.exists(source):
      files.write_text(files.join(target, name), files.read_text(source))


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--stage", required=True, choices=sorted(STAGES))
  parser.add_argument("--workdirs", default="runs/grid")
  parser.add_argument("--results", default="results/grid")
  parser.add_argument("--only", default="", help="run paths containing this")
  parser.add_argument("--dry-run", action="store_true")
  args = parser.parse_args()
  runs = [r for r in STAGES[args.stage]() if args.only in r.path]
  if args.dry_run:
    for run in runs:
      print(run.path, "done" if done(args.results, run) else "to run",
            json.dumps(run.settings))
    print(f"{len(runs)} runs, {sum(done(args.results, r) for r in runs)}"
          " done")
    return 0
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  from ra_jax.training import loop
  files.makedirs(args.results)
  files.write_json(files.join(args.results, "protocol.json"), protocol())
  start = time.time()
  for i, run in enumerate(runs, 1):
    if done(args.results, run):
      continue
    print(f"[{i}/{len(runs)}] {run.path}", flush=True)
    workdir = os.path.join(args.workdirs, run.path)
    results = loop.train_and_evaluate(run.config(), workdir)
    keep(workdir, args.results, run)
    print(f"    mAP {results['exact']['map']:.4f}, P@10"
          f" {results['exact']['precision@10']:.4f},"
          f" {time.time() - start:.0f} s so far", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
