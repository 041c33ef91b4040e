"""A finished (or interrupted) run, loaded for use: its config, newest
readable checkpoint and a jitted embedding function (`TrainedRun`), and the
final evaluation re-run from it (`evaluate_workdir`). `ra_jax.evaluate`,
`ra_jax.search` and `ra_jax.report` start here."""

from typing import Optional

import jax
import numpy as np

from ra_jax import files, retrieval
from ra_jax.data import augment as augment_lib
from ra_jax.training import checkpoint, evaluation, experiment, runtime


class TrainedRun:
  """The model of `workdir` at its newest readable checkpoint.

  `config` defaults to the work dir's config.json; a given one must match it
  in dataset, model and loss (`experiment.claim_workdir`). In a
  multi-process job, call `runtime.initialize` first."""

  def __init__(self, workdir: str, config=None):
    if config is None:
      config = experiment.config_of(workdir)
    else:
      experiment.claim_workdir(workdir, config)  # refuses another run's
    self.workdir = workdir
    self.exp = experiment.build(config, workdir)
    with self.exp.checkpoints() as mngr:
      restored = checkpoint.restore_latest(mngr, self.exp.abstract_state())
    if restored is None:
      raise FileNotFoundError(f"{workdir}/checkpoints holds no readable"
                              " checkpoint")
    self.step, self.state, _ = restored
    self.variables = evaluation.variables_of(self.state)
    self.anchors: Optional[np.ndarray] = evaluation.anchors_of(
        self.state, self.exp.loss)
    self.apply = jax.jit(self.exp.model.apply)
    self.source = self.exp.source

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

  def database_index(self, *, progress: bool = True) -> retrieval.Index:
    """The database split's Index, cached as index/step_<N>.npz."""
    path = files.join(self.workdir, "index", f"step_{self.step}.npz")
    database = self.split("database")
    if files.exists(path):
      index = retrieval.Index.load(path)
      if len(index) != len(database):
        raise ValueError(f"{path} holds {len(index)} items but the database"
                         f" split has {len(database)}; delete it to rebuild")
      return index
    embeddings, labels = self.embed_split(
        database, progress="indexing the database" if progress else None)
    index = retrieval.Index.build(embeddings, labels, anchors=self.anchors)
    if runtime.is_writer():
      index.save(path)
    return index


def evaluate_workdir(workdir: str, config=None) -> tuple[int, dict]:
  """(checkpoint step, results) of the newest readable checkpoint, also
  written to `workdir/evaluation/step_<N>.json`."""
  run = TrainedRun(workdir, config)
  results = evaluation.final_results(run.exp, run.state, run.step,
                                     apply=run.apply)
  if runtime.is_writer():
    files.write_json(
        files.join(workdir, "evaluation", f"step_{run.step}.json"), results)
  return run.step, results
