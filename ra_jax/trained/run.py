"""A finished (or interrupted) run, loaded for use: its config, newest
readable checkpoint and a jitted embedding function (`TrainedRun`), and the
final evaluation re-run from it (`evaluate_workdir`). Search, export, the
web page and the report start here.

Loading a run reads its work dir and writes nothing to it.
"""

from typing import Optional

import jax
import numpy as np

from ra_jax import files, retrieval
from ra_jax.data import augment as augment_lib
from ra_jax.training import checkpoint, evaluation, experiment, runtime
from ra_jax.training import workdir as workdir_lib
from ra_jax.training import step as step_lib


class TrainedRun:
  """The model of `workdir` at its newest readable checkpoint, or, without
  one, its final parameters (params.msgpack).

  `config` defaults to the work dir's config.json; a given one must match it
  in dataset, model and loss (`workdir.check_identity`). In a multi-process
  job, call `runtime.initialize` first."""

  def __init__(self, workdir: str, config=None):
    if config is None:
      config = workdir_lib.config_of(workdir)
    elif files.exists(workdir_lib.path(workdir, workdir_lib.CONFIG)):
      workdir_lib.check_identity(workdir, config)  # refuses another run's
    self.workdir = workdir
    self.exp = experiment.build(config, workdir)
    abstract = self.exp.abstract_state()
    restored = None
    # Reading a run writes nothing: orbax's manager would create the
    # directory (in a results/ folder that keeps params.msgpack only).
    if files.exists(workdir_lib.path(workdir, workdir_lib.CHECKPOINTS)):
      with self.exp.checkpoints() as mngr:
        restored = checkpoint.restore_latest(mngr, abstract.saved())
    params_file = workdir_lib.path(workdir, workdir_lib.PARAMS)
    if restored is not None:
      self.step, saved, _ = restored
      self.state = step_lib.TrainState.from_saved(saved)
    elif files.exists(params_file):  # a finished run's kept parameters
      self.step, variables = checkpoint.load_params(
          params_file, evaluation.variables_of(abstract))
      self.state = abstract.replace(
          params=variables["params"], batch_stats=variables["batch_stats"],
          opt_state=None)
    else:
      raise FileNotFoundError(f"{workdir}/{workdir_lib.CHECKPOINTS} holds no"
                              f" readable checkpoint (and there is no"
                              f" {workdir_lib.PARAMS})")
    self.variables = evaluation.variables_of(self.state)
    self.anchors: Optional[np.ndarray] = evaluation.anchors_of(
        self.state, self.exp.loss)
    self.apply = jax.jit(self.exp.model.apply)
    self.source = self.exp.source

  @property
  def channels(self) -> int:
    """Channels of the model's input images (1 or 3)."""
    return self.exp.image_shape[-1]

  def split(self, role: str):
    """"query" or "database": the protocol's split."""
    name = {"query": self.source.query_split,
            "database": self.source.database_split}[role]
    return self.source.splits[name]

  def embed_split(self, split, *, progress: Optional[str] = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (N, D) and labels (N,) of every example of `split`;
    `progress`: a progress bar's description."""
    return evaluation.embed(self.apply, self.variables, split,
                            self.exp.augment, self.exp.config.eval.batch_size,
                            progress=progress)

  def embed_image(self, image: np.ndarray) -> np.ndarray:
    """(1, D) embedding of one uint8 (H, W, C) image of any size."""
    x = augment_lib.eval_transform(image, self.exp.augment)[None]
    return np.asarray(self.apply(self.variables, x), np.float32)

  def database_index(self, *, progress: bool = True, cache: bool = True,
                     storage: Optional[str] = None) -> retrieval.BaseIndex:
    """The database split's index, as `eval.index_storage` says: an `Index`
    (`cache`: read from, or by process 0 saved to, the work dir's
    index/step_<N>.npz, so a newer checkpoint gets a new one), or a
    `DiskIndex` directory index/step_<N>/ built batch by batch (the
    embeddings are never all in memory; other processes and `cache=False`
    build an `Index`). `storage`: instead of `eval.index_storage`."""
    if storage is None:
      dtype = experiment.index_dtype(
          self.exp.config.eval.get("index_storage", "memory"))
    else:
      dtype = experiment.index_dtype(storage, "index_storage")
    on_disk = dtype is not None and cache and runtime.is_writer()
    path = workdir_lib.index_path(self.workdir, self.step, on_disk=on_disk)
    database = self.split("database")
    bar = "indexing the database" if progress else None
    if cache and files.exists(path):
      index = retrieval.open_index(path)
      if len(index) != len(database):
        raise ValueError(f"{path} holds {len(index)} items but the database"
                         f" split has {len(database)}; delete it to rebuild")
      return index
    if on_disk:
      dim = self.exp.config.model.embedding_dim
      with retrieval.DiskIndexWriter(path, dim, anchors=self.anchors,
                                     dtype=dtype) as writer:
        for embeddings, labels in evaluation.embed_batches(
            self.apply, self.variables, database, self.exp.augment,
            self.exp.config.eval.batch_size, progress=bar):
          writer.add(embeddings, labels)
      return writer.index
    embeddings, labels = self.embed_split(database, progress=bar)
    index = retrieval.Index.build(embeddings, labels, anchors=self.anchors)
    if cache and runtime.is_writer():
      index.save(path)
    return index


def evaluate_workdir(workdir: str, config=None) -> tuple[int, dict]:
  """(checkpoint step, results) of the newest readable checkpoint, also
  written to `workdir/evaluation/step_<N>.json`."""
  run = TrainedRun(workdir, config)
  results = evaluation.final_results(run.exp, run.state, run.step,
                                     apply=run.apply,
                                     progress=runtime.is_writer())
  if runtime.is_writer():
    files.write_json(workdir_lib.evaluation_path(workdir, run.step), results)
  return run.step, results
