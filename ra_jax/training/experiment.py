"""One run's parts, built from its config: the data source and training
pipeline, the model, the optimizer, the initial sharded state and the
checkpoint manager. `train`, `evaluate` and `search` all start here, so they
agree on what a work dir holds.
"""

import dataclasses
import functools
import json
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ra_jax import data, files, losses, models
from ra_jax.training import checkpoint, objective, optimizer
from ra_jax.training import step as step_lib

# The parts of a config that make a work dir's checkpoints what they are.
IDENTITY_KEYS = ("dataset", "model", "loss")


@dataclasses.dataclass
class Experiment:
  config: ml_collections.ConfigDict
  workdir: str
  source: data.DatasetSource
  train_split: Any  # the (few-shot) training records
  train_labels: np.ndarray
  model: models.RetrievalModel
  image_shape: tuple[int, int, int]
  total_steps: int
  tx: optax.GradientTransformation
  mesh: Mesh
  loss: losses.LossSpec
  # (embeddings, labels, class_params, where, step) -> (loss (B,), terms):
  # the loss with its hyperparameters and warm-up (`objective.loss_fn`).
  loss_fn: Callable
  # "l2" or "sphere": the space embeddings are trained, evaluated and
  # searched in (the head projects onto the sphere for "sphere").
  geometry: str

  def init_state(self) -> step_lib.TrainState:
    """Fresh parameters (with the pretrained backbone if configured),
    replicated over the mesh."""
    replicated = NamedSharding(self.mesh, PartitionSpec())
    # One compilation instead of hundreds of op-by-op ones.
    state = jax.jit(lambda rng: step_lib.create_state(
        self.model, self.tx, rng, self.image_shape),
                    out_shardings=replicated)(
                        jax.random.PRNGKey(self.config.train.seed))
    if self.config.model.pretrained:
      variables = models.with_pretrained_backbone(
          {"params": state.params, "batch_stats": state.batch_stats},
          models.adapt_input_channels(
              models.load_pretrained(self.config.model.name,
                                     self.config.model.pretrained,
                                     **_backbone_kwargs(self.config)),
              self.image_shape[-1]))
      state = jax.device_put(step_lib.TrainState(
          step=state.step, params=variables["params"],
          batch_stats=variables.get("batch_stats", {}),
          opt_state=self.tx.init(variables["params"])), replicated)
    return state

  def abstract_state(self) -> step_lib.TrainState:
    """Shapes, dtypes and shardings of the state, without computing it."""
    shapes = jax.eval_shape(lambda rng: step_lib.create_state(
        self.model, self.tx, rng, self.image_shape), jax.random.PRNGKey(0))
    replicated = NamedSharding(self.mesh, PartitionSpec())
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
        shapes)

  def train_pipeline(self):
    return data.train_dataset(
        self.train_split, self.augment,
        global_batch_size=self.config.train.global_batch_size,
        seed=self.config.train.seed,
        images_per_class=self.config.dataset.images_per_class or None,
        labels=self.train_labels)

  @property
  def augment(self) -> data.AugmentConfig:
    return data.preset(self.source.name,
                       image_size=self.config.dataset.image_size)

  def checkpoints(self):
    train = self.config.train
    # orbax needs an absolute path (or a URL); users pass relative ones.
    return checkpoint.manager(files.absolute(files.join(self.workdir,
                                                        "checkpoints")),
                              every=train.checkpoint_every,
                              keep=train.keep_checkpoints)


# (section, field, smallest allowed value, inclusive?) of numeric fields.
_BOUNDS = (
    ("train", "global_batch_size", 1, True), ("train", "epochs", 0, True),
    ("train", "steps", 0, True), ("train", "checkpoint_every", 1, True),
    ("train", "keep_checkpoints", 1, True), ("train", "log_every", 1, True),
    ("optim", "learning_rate", 0, False), ("optim", "warmup_steps", 0, True),
    ("optim", "weight_decay", 0, True), ("optim", "anchor_lr_mult", 0, True),
    ("optim", "grad_clip", 0, True), ("model", "embedding_dim", 1, True),
    ("model", "width", 0, True), ("model", "anchor_init_scale", 0, False),
    ("dataset", "image_size", 1, True),
    ("dataset", "shot", 0, True), ("dataset", "images_per_class", 0, True),
    ("dataset", "train_examples", 0, True),
    ("dataset", "validation_examples", 0, True),
    ("train", "prefetch_batches", 0, True), ("eval", "batch_size", 1, True),
    ("train", "loss_warmup_steps", 0, True),
    ("eval", "every", 0, True),
)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """ValueErrors naming the field for values no run can use, found before
  anything is loaded or written."""
  for section, field, low, inclusive in _BOUNDS:
    value = config[section].get(field)
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        not math.isfinite(value)) or (value < low if inclusive else
                                      value <= low):
      bound = f">= {low}" if inclusive else f"> {low}"
      raise ValueError(f"{section}.{field}={value!r}: must be a number"
                       f" {bound}")
  if not config.train.steps and not config.train.epochs:
    raise ValueError("train.steps and train.epochs are both 0: set one")
  bad_ks = [k for k in config.eval.ks if not isinstance(k, int) or k < 1]
  if bad_ks:
    raise ValueError(f"eval.ks {tuple(config.eval.ks)}: cut-offs must be"
                     " integers >= 1")
  if config.model.get("anchor_init", "normal") not in ("normal",
                                                       "orthogonal"):
    raise ValueError(f"model.anchor_init={config.model.anchor_init!r}: one"
                     " of normal, orthogonal")
  if config.dataset.get("in_memory", "auto") not in ("auto", "always",
                                                     "never"):
    raise ValueError(f"dataset.in_memory={config.dataset.in_memory!r}: one"
                     " of auto, always, never")
  if config.model.dtype not in ("float32", "bfloat16", "float16"):
    raise ValueError(f"model.dtype={config.model.dtype!r}: one of float32,"
                     " bfloat16, float16")


def build(config: ml_collections.ConfigDict, workdir: str) -> Experiment:
  """Everything but the state. Writes only few_shot_indices.json (once)."""
  validate_config(config)
  loss = objective.spec_of(config.loss)
  geometry = objective.geometry_of(config.loss)
  loss_fn = objective.loss_fn(dict(config.loss),
                              config.train.get("loss_warmup_steps", 0))
  source = _source(config)
  objective.check_values(loss, config.loss, source.num_classes,
                         config.model.embedding_dim)
  lists = tuple(config.eval.two_stage_lists)
  if loss.anchors and not all(1 <= n <= source.num_classes for n in lists):
    raise ValueError(f"eval.two_stage_lists {lists}: each must be in [1,"
                     f" {source.num_classes}] (the classes of"
                     f" {source.name!r})")
  batch = config.train.global_batch_size
  if batch % jax.device_count():
    raise ValueError(f"train.global_batch_size {batch} is not divisible by"
                     f" the {jax.device_count()} devices")
  train_split, labels = _training_examples(config, source, workdir)
  total_steps = (int(config.train.steps) if config.train.steps else
                 max(1, config.train.epochs * len(train_split) // batch))
  model = models.get_model(
      config.model.name, embedding_dim=config.model.embedding_dim,
      num_classes=source.num_classes, class_params=loss.class_params,
      l2_normalize=geometry == "sphere",
      head_batch_norm=config.model.get("head_batch_norm", False),
      anchor_init=config.model.get("anchor_init", "normal"),
      anchor_init_scale=config.model.get("anchor_init_scale", 1.0),
      dtype=getattr(jnp, config.model.dtype), **_backbone_kwargs(config))
  image_shape = (config.dataset.image_size, config.dataset.image_size,
                 source.image_shape[-1] if source.image_shape else 3)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, *image_shape)))["params"]
  tx = optimizer.make_optimizer(dict(config.optim), total_steps, params)
  return Experiment(config=config, workdir=workdir, source=source,
                    train_split=train_split, train_labels=labels, model=model,
                    image_shape=image_shape, total_steps=total_steps, tx=tx,
                    mesh=step_lib.data_mesh(), loss=loss, loss_fn=loss_fn,
                    geometry=geometry)


def _training_examples(config, source: data.DatasetSource, workdir: str):
  """The training records and their labels: the whole training split, its
  few-shot selection (`dataset.shot`, saved to the work dir) or a
  stratified subset (`dataset.train_examples`)."""
  split = source.splits[source.train_split]
  labels = data.split_labels(split)
  shot, count = config.dataset.shot, config.dataset.get("train_examples", 0)
  if shot and count:
    raise ValueError("dataset.shot and dataset.train_examples both select"
                     " training examples; set one of them to 0")
  if shot:
    chosen = data.few_shot_indices(labels, shot, config.dataset.shot_seed)
    data.save_few_shot_indices(
        files.join(workdir, "few_shot_indices.json"), chosen,
        {"shot": shot, "seed": config.dataset.shot_seed})
  elif count:
    chosen = data.stratified_subset(labels, count, config.train.seed)
  else:
    return split, labels
  return data.SubsetSplit(split, chosen), labels[chosen]


def check_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
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
  if not files.exists(files.join(workdir, "config.json")):
    return
  saved = _identity(load_config_json(workdir))
  current = _identity(json.loads(config.to_json_best_effort()))
  differ = [k for k in IDENTITY_KEYS if saved.get(k) != current.get(k)]
  if differ:
    raise ValueError(f"{workdir} holds a run with another {', '.join(differ)}"
                     f" configuration ({workdir}/config.json); train in"
                     " another work dir")


def claim_workdir(workdir: str, config: ml_collections.ConfigDict, *,
                  update: bool = False) -> None:
  """`check_workdir`, then saves the config on first use (process 0).
  `update`: also when it exists (a resumed training run records the
  settings it continues with, e.g. more epochs)."""
  check_workdir(workdir, config)
  path = files.join(workdir, "config.json")
  if files.exists(path) and not update:
    return
  if jax.process_index() == 0:
    files.write_text(path, config.to_json_best_effort(indent=1))


# Fields added after runs were saved without them, with the value those
# runs had; and dataset fields that do not change what a run computes.
_ADDED_FIELDS = {
    "dataset": {"validation_examples": 0, "validation_seed": 0},
    "model": {"head_batch_norm": False, "anchor_init": "normal",
              "anchor_init_scale": 1.0},
}
_NOT_IDENTITY = {"dataset": ("in_memory",)}
# Loss hyperparameters added since, per loss, at the value that leaves the
# loss as it was (the paper's class anchor margin loss).
_ADDED_LOSS_FIELDS = {"cam": {"attract_weight": 1.0, "push_weight": 0.0}}


def _identity(config: dict) -> dict:
  """The parts of a config that make its checkpoints what they are."""
  config = _upgraded(config)
  for section, fields in _NOT_IDENTITY.items():
    for field in fields:
      config.get(section, {}).pop(field, None)
  return config


def _upgraded(saved: dict) -> dict:
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
  path = files.join(workdir, "config.json")
  if not files.exists(path):
    raise FileNotFoundError(f"{workdir} holds no run: {path} does not exist")
  return files.read_json(path)


def config_of(workdir: str) -> ml_collections.ConfigDict:
  """The config a work dir was trained with (its config.json), with the
  fields added since filled in as the run had them."""
  return ml_collections.ConfigDict(_upgraded(load_config_json(workdir)))


def _backbone_kwargs(config) -> dict:
  kwargs = {}
  name = config.model.name
  if config.model.width and name.startswith(("resnet", "mlp")):
    kwargs["width"] = config.model.width
  if config.model.get("depth", 0) and name.startswith(("vit", "mlp")):
    kwargs["depth"] = config.model.depth
  if name.startswith("vit"):
    kwargs["image_size"] = config.dataset.image_size
  return kwargs


def _source(config) -> data.DatasetSource:
  """The run's dataset: loaded (and decoded into memory, `dataset.in_memory`)
  once per process, with its query/database protocol or its validation
  hold-out (`dataset.validation_examples`)."""
  ds = config.dataset
  source = _loaded_source(ds.name, ds.data_dir, ds.manual_dir,
                          ds.get("builder", "auto"),
                          ds.get("in_memory", "auto"))
  count = ds.get("validation_examples", 0)
  if count:
    if ds.query_split or ds.database_split:
      raise ValueError("dataset.validation_examples replaces the query and"
                       " database splits; leave dataset.query_split and"
                       " dataset.database_split empty")
    return data.with_validation(source, count, ds.get("validation_seed", 0))
  return source.with_protocol(query_split=ds.query_split or None,
                              database_split=ds.database_split or None)


@functools.lru_cache(maxsize=2)
def _loaded_source(name: str, data_dir: str, manual_dir: str, builder: str,
                   in_memory: str) -> data.DatasetSource:
  kwargs = {}
  if name not in ("digits",):
    if data_dir:
      kwargs["data_dir"] = data_dir
    if manual_dir:
      kwargs["manual_dir"] = manual_dir
    if builder not in ("auto", "catalogue", "own"):
      raise ValueError(f"dataset.builder must be auto, catalogue or own, got"
                       f" {builder!r}")
    if builder != "auto":
      kwargs["own_builder"] = builder == "own"
  return data.in_memory(data.get_source(name, **kwargs), in_memory)
