"""A run's work dir: the one place that spells its layout, ties it to one
configuration and reads configs saved by older versions.

The work dir is the interface between the trainer, the CLIs, the report and
a study's plan. What it holds (every name below is used through this module):

  config.json              the run's config (process 0, when first claimed,
                           and again when a resumed run changes settings)
  metrics.jsonl            scalars per logged step (`writers.MetricWriter`)
  tensorboard/             the same scalars as TensorBoard events
  checkpoints/<step>/      orbax checkpoints (state + data iterator)
  checkpoints_unreadable/  checkpoints that failed to restore, set aside
  few_shot_indices.json    the training records of a few-shot run
  results.json             the final evaluation (`evaluation.final_results`)
  params.msgpack           the final parameters, no optimizer state
                           (`train.save_params`; `checkpoint.save_params`)
  evaluation/step_<N>.json  `python -m ra_jax.evaluate` at checkpoint N
  index/step_<N>.npz       the database index of checkpoint N (a cache), or
  index/step_<N>/          its on-disk index (eval.index_storage "disk")
  search/<query>.png       `python -m ra_jax.search`'s grids
  analysis.json, .npz      what the report computed from the embeddings
  grid.json                where a study placed the run (its plan's path,
                           stage, seed, settings); written by the study
"""

import json
import os
from typing import Optional

import jax
import ml_collections

from ra_jax import files, losses
from ra_jax.training import checkpoint

CONFIG = "config.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
UNREADABLE_CHECKPOINTS = CHECKPOINTS + checkpoint.UNREADABLE_SUFFIX
FEW_SHOT = "few_shot_indices.json"
RESULTS = "results.json"
PARAMS = "params.msgpack"
ANALYSIS = "analysis.json"
ANALYSIS_ARRAYS = "analysis.npz"
STUDY_RECORD = "grid.json"
# Folders of a work dir that hold no run of their own (a directory walk for
# runs skips them).
NOT_RUNS = (CHECKPOINTS, UNREADABLE_CHECKPOINTS, TENSORBOARD, "index",
            "search", "evaluation", "logs")

# The parts of a config that make a work dir's checkpoints what they are.
IDENTITY_KEYS = ("dataset", "model", "loss")


def path(workdir: str, name: str) -> str:
  """`workdir/name` for one of the names above."""
  return files.join(workdir, name)


def evaluation_path(workdir: str, step: int) -> str:
  return files.join(workdir, "evaluation", f"step_{step}.json")


def index_path(workdir: str, step: int, *, on_disk: bool = False) -> str:
  """The cached database index of checkpoint `step`: an `Index` file, or
  (`on_disk`) a `DiskIndex` directory."""
  return files.join(workdir, "index",
                    f"step_{step}" if on_disk else f"step_{step}.npz")


def search_grid_path(workdir: str, query_name: str) -> str:
  return files.join(workdir, "search", f"{query_name}.png")


def is_run(names) -> bool:
  """Whether a directory listing `names` is a finished run's."""
  return RESULTS in names and CONFIG in names


def read_study_record(workdir: str) -> Optional[dict]:
  """The study's record of the run (None for a run outside a study)."""
  target = path(workdir, STUDY_RECORD)
  return files.read_json(target) if files.exists(target) else None


def check(workdir: str, config: ml_collections.ConfigDict) -> None:
  """A work dir belongs to one configuration: refuses a config that differs
  from the saved one in IDENTITY_KEYS, and a path that cannot be one (a
  file, a local directory this process may not write; a bucket's
  permissions show at the first write). Writes nothing."""
  try:
    exists = files.exists(workdir)
  except ImportError as error:  # fsspec names the missing package
    raise ValueError(f"work dir {workdir}: {error} (the .[gcs] extra has"
                     " what gs:// needs)") from error
  if exists and not files.isdir(workdir):
    raise ValueError(f"work dir {workdir} is a file, not a directory")
  if not files.is_remote(workdir):
    existing = os.path.abspath(workdir)
    while not os.path.exists(existing):
      existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
      raise ValueError(f"work dir {workdir}: {existing} is a file, not a"
                       " directory")
    if not os.access(existing, os.W_OK | os.X_OK):
      raise ValueError(f"work dir {workdir}: {existing} is not writable")
  if not files.exists(path(workdir, CONFIG)):
    return
  check_identity(workdir, config)


def check_identity(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuses `config` if it differs from `workdir`'s saved config in
  IDENTITY_KEYS. Writes nothing."""
  saved = _identity(load_config_json(workdir))
  current = _identity(json.loads(config.to_json_best_effort()))
  differ = [k for k in IDENTITY_KEYS if saved.get(k) != current.get(k)]
  if differ:
    raise ValueError(f"{workdir} holds a run with another {', '.join(differ)}"
                     f" configuration ({workdir}/{CONFIG}); train in"
                     " another work dir")


def claim(workdir: str, config: ml_collections.ConfigDict) -> None:
  """`check`, then (process 0) saves the config: the training run records
  the settings it starts or continues with (e.g. more epochs)."""
  check(workdir, config)
  if jax.process_index() == 0:
    files.write_text(path(workdir, CONFIG),
                     config.to_json_best_effort(indent=1))


# Fields added after runs were saved without them, with the value those
# runs had; and dataset fields that do not change what a run computes.
_ADDED_FIELDS = {
    "dataset": {"validation_examples": 0, "validation_seed": 0,
                "shot_holdout": 0, "num_classes": 0},
    "model": {"head_batch_norm": False, "anchor_init": "normal",
              "anchor_init_scale": 1.0},
    "train": {"neighbor_skin": 0.0, "neighbor_capacity": 0},
}
_NOT_IDENTITY = {"dataset": ("in_memory",)}
# Loss hyperparameters added since, per loss, at the value that leaves the
# loss as it was (the paper's class anchor margin loss).
_ADDED_LOSS_FIELDS = {"cam": {"attract_weight": 1.0, "push_weight": 0.0}}


def _identity(config: dict) -> dict:
  """The parts of a config that make its checkpoints what they are."""
  config = upgraded_config(config)
  for section, fields in _NOT_IDENTITY.items():
    for field in fields:
      config.get(section, {}).pop(field, None)
  return config


def upgraded_config(saved: dict) -> dict:
  """A saved config with the fields added since filled in as the run had
  them. Runs saved before `loss.geometry` existed trained pair and triplet
  losses on raw embeddings: they get "l2" (the others their only one)."""
  saved = json.loads(json.dumps(saved))
  for section, fields in _ADDED_FIELDS.items():
    for field, value in fields.items():
      saved.get(section, {}).setdefault(field, value)
  loss = saved.get("loss", {})
  for field, value in _ADDED_LOSS_FIELDS.get(loss.get("name"), {}).items():
    loss.setdefault(field, value)
  if "geometry" not in loss and loss.get("name") in losses.LOSSES:
    spec = losses.get_loss(loss["name"])
    loss["geometry"] = ("l2" if "l2" in spec.allowed_geometries else
                        spec.geometry)
  return saved


def load_config_json(workdir: str) -> dict:
  target = path(workdir, CONFIG)
  if not files.exists(target):
    raise FileNotFoundError(f"{workdir} holds no run: {target} does not"
                            " exist")
  return files.read_json(target)


def config_of(workdir: str) -> ml_collections.ConfigDict:
  """The config a work dir was trained with (its config.json), with the
  fields added since filled in as the run had them."""
  return ml_collections.ConfigDict(upgraded_config(load_config_json(workdir)))
