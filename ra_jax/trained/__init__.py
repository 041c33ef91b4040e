"""What uses a finished run: `TrainedRun` (its model at the newest readable
checkpoint, embeddings, the database index), `evaluate_workdir`, `Searcher`
(image queries), the query-image decoder and tile renderer (`images`),
`export` (the run as files that need jax and flatbuffers only) and the web page (`page`,
needs the `.[serve]` extra). Imports the trainer's run building; the
trainer never imports this package."""

from ra_jax.trained.run import evaluate_workdir
from ra_jax.trained.run import TrainedRun
from ra_jax.trained.search import Searcher

__all__ = ["Searcher", "TrainedRun", "evaluate_workdir"]
