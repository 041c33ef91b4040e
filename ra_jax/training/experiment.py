"""One run's parts, built from its config: the data source and training
pipeline, the model, the optimizer, the initial sharded state and the
checkpoint manager. `train`, `evaluate` and `search` all start here, so they
agree on what a work dir holds.
"""

import dataclasses
import functools
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ra_jax import data, files, losses, models, retrieval
from ra_jax.training import checkpoint, evaluation, objective, optimizer
from ra_jax.training import step as step_lib
from ra_jax.training import workdir as workdir_lib

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
  # The few-shot run's training records (indices into the training split),
  # or None.
  few_shot_indices: Optional[np.ndarray] = None
  # The repeller's neighbour list (train.neighbor_skin > 0), or None.
  neighbor_lists: Optional[objective.NeighborLists] = None

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
    if self.config.model.get("anchor_init") == "imprinted":
      state = jax.device_put(self._imprinted(state), replicated)
    return state

  def _imprinted(self, state: step_lib.TrainState) -> step_lib.TrainState:
    """`state` with every (C, D) class matrix imprinted from the untrained
    network's embeddings of the training records (models/imprint.py).
    Every process computes the same, from its own copy of the data."""
    matrices = [name for name, shape in models.class_param_shapes(
        self.loss.class_params) if shape == "matrix"]
    if not matrices:  # pair and triplet losses learn no class vectors
      return state
    embeddings, labels = evaluation.embed(
        jax.jit(self.model.apply), evaluation.variables_of(state),
        self.train_split, self.augment, self.config.eval.batch_size)
    imprinted = models.imprinted_class_vectors(
        embeddings, labels, self.source.num_classes,
        self.config.model.get("anchor_init_scale", 1.0))
    head = dict(state.params["head"])
    for name in matrices:
      head[name] = jnp.asarray(imprinted, head[name].dtype)
    params = {**state.params, "head": head}
    return step_lib.TrainState(step=state.step, params=params,
                               batch_stats=state.batch_stats,
                               opt_state=self.tx.init(params))

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

  def save_few_shot_selection(self) -> None:
    """Records a few-shot run's training records in the work dir (the
    trainer does, before the first step); refuses to replace another
    selection. Nothing for other runs."""
    if self.few_shot_indices is not None:
      data.save_few_shot_indices(
          workdir_lib.path(self.workdir, workdir_lib.FEW_SHOT),
          self.few_shot_indices, {"shot": self.config.dataset.shot,
                                  "seed": self.config.dataset.shot_seed})

  def checkpoints(self):
    train = self.config.train
    # orbax needs an absolute path (or a URL); users pass relative ones.
    return checkpoint.manager(files.absolute(workdir_lib.path(
        self.workdir, workdir_lib.CHECKPOINTS)),
                              every=train.checkpoint_every,
                              keep=train.keep_checkpoints)


# eval.index_storage: the database index's storage -> on-disk dtype (None:
# in memory).
INDEX_STORAGE = {"memory": None, "disk": "float32", "disk_float16": "float16"}


def index_dtype(storage: str, field: str = "eval.index_storage"
                ) -> Optional[str]:
  """The on-disk dtype of an index storage (None: in memory); a ValueError
  naming `field` for a storage INDEX_STORAGE does not know."""
  if storage not in INDEX_STORAGE:
    raise ValueError(f"{field}={storage!r}: one of"
                     f" {', '.join(INDEX_STORAGE)}")
  return INDEX_STORAGE[storage]


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
    ("dataset", "shot_holdout", 0, True),
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
  for field, allowed in (("class_vectors", (retrieval.LEARNED,
                                             retrieval.CENTROIDS)),
                         ("list_sources", ("labels", "anchors"))):
    values = tuple(config.eval.get(field, ()))
    if not set(values) <= set(allowed):
      raise ValueError(f"eval.{field}={values!r}: each one of"
                       f" {', '.join(allowed)}")
  index_dtype(config.eval.get("index_storage", "memory"))
  if config.model.get("anchor_init", "normal") not in ("normal",
                                                       "orthogonal",
                                                       "imprinted"):
    raise ValueError(f"model.anchor_init={config.model.anchor_init!r}: one"
                     " of normal, orthogonal, imprinted")
  if config.dataset.get("in_memory", "auto") not in ("auto", "always",
                                                     "never"):
    raise ValueError(f"dataset.in_memory={config.dataset.in_memory!r}: one"
                     " of auto, always, never")
  if config.model.dtype not in ("float32", "bfloat16", "float16"):
    raise ValueError(f"model.dtype={config.model.dtype!r}: one of float32,"
                     " bfloat16, float16")


def build(config: ml_collections.ConfigDict, workdir: str) -> Experiment:
  """Everything but the state. Reads the data; writes nothing."""
  validate_config(config)
  loss = objective.spec_of(config.loss)
  geometry = objective.geometry_of(config.loss)
  loss_fn = objective.loss_fn(dict(config.loss),
                              config.train.get("loss_warmup_steps", 0))
  source = _source(config)
  objective.check_values(loss, config.loss, source.num_classes,
                         config.model.embedding_dim)
  neighbor_lists = objective.neighbor_lists(
      config.loss, config.train, config.model.embedding_dim)
  if loss.stage_one or retrieval.CENTROIDS in config.eval.get(
      "class_vectors", ()):
    retrieval.check_num_lists(tuple(config.eval.two_stage_lists),
                              source.num_classes, "eval.two_stage_lists")
  batch = config.train.global_batch_size
  if batch % jax.device_count():
    raise ValueError(f"train.global_batch_size {batch} is not divisible by"
                     f" the {jax.device_count()} devices")
  train_split, labels, few_shot = _training_examples(config, source)
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
                    geometry=geometry, few_shot_indices=few_shot,
                    neighbor_lists=neighbor_lists)


def _training_examples(config, source: data.DatasetSource):
  """(training records, their labels, the few-shot selection or None): the
  whole training split, its few-shot selection (`dataset.shot`) or a
  stratified subset (`dataset.train_examples`)."""
  split = source.splits[source.train_split]
  labels = data.split_labels(split)
  shot, count = config.dataset.shot, config.dataset.get("train_examples", 0)
  if shot and count:
    raise ValueError("dataset.shot and dataset.train_examples both select"
                     " training examples; set one of them to 0")
  if shot:
    pool = np.arange(len(labels))
    holdout = config.dataset.get("shot_holdout", 0)
    if holdout and not config.dataset.get("validation_examples", 0):
      # the validation queries of model selection are never trained on
      pool = np.setdiff1d(pool, data.stratified_subset(
          labels, holdout, config.dataset.get("validation_seed", 0)))
    chosen = pool[data.few_shot_indices(labels[pool], shot,
                                        config.dataset.shot_seed)]
  elif count:
    chosen = data.stratified_subset(labels, count, config.train.seed)
  else:
    return split, labels, None
  return (data.SubsetSplit(split, chosen), labels[chosen],
          chosen if shot else None)


def _backbone_kwargs(config) -> dict:
  """The run options `config.model.name`'s family takes."""
  return models.backbone_options(
      config.model.name, width=config.model.width,
      depth=config.model.get("depth", 0),
      image_size=config.dataset.image_size)


def _source(config) -> data.DatasetSource:
  """The run's dataset: loaded (and decoded into memory, `dataset.in_memory`)
  once per process, with its query/database protocol or its validation
  hold-out (`dataset.validation_examples`)."""
  ds = config.dataset
  source = loaded_source(config)
  count = ds.get("validation_examples", 0)
  if count:
    if ds.query_split or ds.database_split:
      raise ValueError("dataset.validation_examples replaces the query and"
                       " database splits; leave dataset.query_split and"
                       " dataset.database_split empty")
    return data.with_validation(source, count, ds.get("validation_seed", 0))
  return source.with_protocol(query_split=ds.query_split or None,
                              database_split=ds.database_split or None)


def loaded_source(config) -> data.DatasetSource:
  """The run's dataset as built (its fingerprint and metadata included),
  decoded into memory per `dataset.in_memory`, once per process; before
  its query/database protocol or validation hold-out."""
  ds = config.dataset
  return _loaded_source(ds.name, ds.data_dir, ds.manual_dir,
                        ds.get("builder", "auto"), ds.get("in_memory", "auto"),
                        ds.get("num_classes", 0))


@functools.lru_cache(maxsize=2)
def _loaded_source(name: str, data_dir: str, manual_dir: str, builder: str,
                   in_memory: str, num_classes: int) -> data.DatasetSource:
  options = data.source_options(name, data_dir=data_dir,
                                manual_dir=manual_dir, builder=builder,
                                num_classes=num_classes)
  return data.in_memory(data.get_source(name, **options), in_memory)
