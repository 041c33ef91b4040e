"""The ConfigDict shape every dataset config fills in (see docs/architecture.md).

`parse_arg("model=vit_s4,loss=triplet,shot=10")` reads the optional
`--config configs/<ds>.py:<arg>` argument; unknown keys or values fail with a
message naming the key and the allowed values.
"""

import ast
from typing import Any, Iterable, Optional

import ml_collections

from configs import validated
from ra_jax import data, losses
from ra_jax.models import registry

ARG_KEYS = {
    "model": None,  # any registry name
    "loss": losses.LOSSES,  # the registered losses
    "shot": None,  # a positive integer, or "full"
    "size": ("full", "tiny"),
}


def parse_arg(arg: Optional[str]) -> dict[str, str]:
  """'k=v,k=v' -> dict, checked against ARG_KEYS."""
  out = {}
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in ARG_KEYS:
      raise ValueError(f"config argument: unknown key {key!r}; allowed:"
                       f" {', '.join(ARG_KEYS)}")
    allowed = ARG_KEYS[key]
    if allowed is not None and value not in allowed:
      raise ValueError(f"config argument {key}={value!r}: allowed values are"
                       f" {', '.join(allowed)}")
    if key == "shot" and value != "full" and not (value.isdigit() and
                                                  int(value) > 0):
      raise ValueError(f"config argument shot={value!r}: a positive integer"
                       " or 'full'")
    out[key] = value
  return out


def set_fields(config: ml_collections.ConfigDict,
               settings: dict[str, Any]) -> None:
  """Sets dotted fields ("optim.learning_rate") that must already exist
  (ml_collections' update_from_flattened_dict would add a misspelt one)."""
  for field in settings:
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


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Iterable[str]) -> None:
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


def loss_config(name: str) -> ml_collections.ConfigDict:
  """`name`, its geometry and its hyperparameters: the values validated
  on Fashion-MNIST (configs/validated.py) over the literature's defaults of
  its signature (through the registry; docs/losses.md)."""
  spec = losses.get_loss(name)
  return ml_collections.ConfigDict(
      {"name": name, "geometry": spec.geometry, **spec.hyperparameters,
       **validated.LOSS.get(name, {})})


def base_config(dataset: str, arg: Optional[str], *, model: str,
                image_size: Optional[int] = None, embedding_dim: int = 128,
                epochs: int = 30, global_batch_size: int = 128,
                images_per_class: int = 0, width: int = 0,
                warmup_steps: int = 100, checkpoint_every: int = 500,
                log_every: int = 50,
                eval_every: int = 1000) -> ml_collections.ConfigDict:
  """One run's full configuration; `size=tiny` in `arg` shrinks it to a
  few-step CPU run (used by the tests) after the dataset's choices.
  `image_size`: the model's input side (default: the dataset's preset,
  `ra_jax.data.DATASETS`).
  `images_per_class` > 0: class-balanced batches for every loss (pair and
  triplet losses get 4 when it is 0)."""
  args = parse_arg(arg)
  image_size = image_size or data.preset(dataset).image_size
  loss = args.get("loss", "cam")
  shot = args.get("shot", "full")
  config = ml_collections.ConfigDict()
  config.dataset = ml_collections.ConfigDict({
      "name": dataset, "data_dir": "", "manual_dir": "",
      # fashion_mnist: "auto" (catalogue data if prepared, else ra_jax's
      # offline builder), "catalogue" or "own".
      "builder": "auto",
      "image_size": image_size, "shot": 0 if shot == "full" else int(shot),
      "shot_seed": 0,
      # > 0: few-shot draws avoid the stratified hold-out of this many
      # training images (validation_seed) in runs without it: the images
      # model selection queried with are never trained on.
      "shot_holdout": 0,
      "query_split": "", "database_split": "",
      # > 0: the classes of a synthetic dataset (synthetic_classes); 0: its
      # default. Other datasets have their own.
      "num_classes": 0,
      "images_per_class": images_per_class,  # > 0: class-balanced batches
      # > 0: train on a stratified, seeded subset of this many examples
      # (after the few-shot selection, if any).
      "train_examples": 0,
      # > 0: hold out this many training examples (stratified, chosen by
      # validation_seed) as the queries, the rest of the training split as
      # training data and database; the test split is not used. For model
      # selection (study/grid.py); final runs leave it 0.
      "validation_examples": 0, "validation_seed": 0,
      # "auto": decode the splits into memory once when they take <= 4 GiB
      # (data.splits.IN_MEMORY_LIMIT_BYTES); "always" / "never".
      "in_memory": "auto",
  })
  config.model = ml_collections.ConfigDict({
      "name": args.get("model", model), "embedding_dim": embedding_dim,
      "dtype": "float32", "width": width,  # 0 = the architecture's default
      "depth": 0,  # ViT / MLP layers; 0 = the architecture's default
      "pretrained": "",
      "head_batch_norm": False,  # BatchNorm on the embedding
      # How per-class matrices (anchors, classifier rows, proxies) start:
      # "normal" or "orthogonal", rows of norm ~ anchor_init_scale*sqrt(D)
      # (models/head.py).
      "anchor_init": "normal", "anchor_init_scale": 1.0,
  })
  config.loss = loss_config(loss)
  if losses.get_loss(loss).needs_positives and not images_per_class:
    config.dataset.images_per_class = 4  # in-batch mining needs positives
  # The loss's validated optimizer (name, learning rate, weight decay,
  # class-parameter multiplier; selected on Fashion-MNIST with a ResNet,
  # configs/validated.py) over the fields it does not set, and the
  # backbone family's selection for the loss (FAMILY_OPTIM: a ViT's) over
  # those.
  family, _ = registry.family_of(config.model.name)
  config.optim = ml_collections.ConfigDict({
      "warmup_steps": warmup_steps, "grad_clip": 0.0, "momentum": 0.9,
      "nesterov": False, **validated.OPTIM[loss],
      **validated.FAMILY_OPTIM.get(family, {}).get(loss, {}),
  })
  config.train = ml_collections.ConfigDict({
      "global_batch_size": global_batch_size, "epochs": epochs, "steps": 0,
      "seed": 0, "checkpoint_every": checkpoint_every, "keep_checkpoints": 2,
      # Also write the final parameters (no optimizer state) to
      # params.msgpack: analyses of the run without its checkpoints.
      "save_params": False,
      # > 0: the loss's warm-up weights (the class anchor margin loss's
      # attractor) grow linearly from 0 over these steps.
      "loss_warmup_steps": (warmup_steps if loss in validated.LOSS_WARMUP
                            else 0),
      "log_every": log_every,
      # Batches prepared ahead of the step, in as many input threads.
      "prefetch_batches": data.DEFAULT_PREFETCH_BATCHES,
      # > 0: the repeller looks only at the anchor pairs a neighbour list
      # keeps, rebuilt when an anchor has moved neighbor_skin * m / 2 (the
      # same loss, exactly; for many classes: docs/losses.md). 0: every
      # pair at every step.
      "neighbor_skin": 0.0,
      # Pairs the list holds (more: every pair until it is rebuilt);
      # 0 = 32 per class.
      "neighbor_capacity": 0,
  })
  config.eval = ml_collections.ConfigDict({
      "ks": (1, 10, 100), "two_stage_lists": (1, 2), "batch_size": 256,
      # Two-stage lists: "labels" (database items by class) and/or
      # "anchors" (by their best class vector); stage 1 by "learned" (the
      # loss's own class vectors) and/or "centroids" (the database's class
      # centroids): one row of results.json's "searches" per combination.
      "list_sources": ("labels",), "class_vectors": ("learned",),
      # Also write each query's AP to results.json (per_query_ap), for
      # paired significance tests between runs on the same queries.
      "per_query": False,
      # During training: mAP@100 of evenly spaced subsets; 0 = off.
      "every": eval_every, "subset_queries": 1000, "subset_database": 10000,
      # The index `python -m ra_jax.search`, the page and export build over
      # the database split: "memory" (an Index, cached as index/step_<N>.npz)
      # or, for databases larger than memory, "disk" / "disk_float16" (a
      # DiskIndex directory index/step_<N>/ built batch by batch).
      "index_storage": "memory",
  })
  # "auto": jax.distributed when the environment describes a multi-process
  # job (ra_jax/training/runtime.py); "on" / "off" to force.
  config.distributed = "auto"
  if args.get("size") == "tiny":
    config.dataset.image_size = min(image_size, 32)
    config.train.epochs = 0
    config.train.steps = 3
    config.train.global_batch_size = 16
    if config.dataset.images_per_class:
      config.dataset.images_per_class = 4
    config.train.checkpoint_every = 2
    config.train.log_every = 1
    config.eval.every = 0  # tests that want it set it
    config.optim.warmup_steps = 1
    config.train.loss_warmup_steps = min(config.train.loss_warmup_steps, 1)
    config.model.width = 8
    config.model.embedding_dim = 16
  return config
