"""What a report needs from a run's embeddings, computed once and saved as
`analysis.json` + `analysis.npz` in its work dir (so the report itself only
reads files); from the run's newest checkpoint or, without one, its kept
final parameters:

- a precision-recall curve (interpolated precision at 11 recall levels,
  averaged over up to 1,000 evenly spaced queries, full ranking);
- a 2-D PCA projection of up to 2,000 query embeddings and the anchors;
- example queries with their top-10 exact neighbours.

The two-stage vs exact search rows are the run's own (results.json).
"""


import numpy as np

from ra_jax import data, files, retrieval
from ra_jax.trained import TrainedRun
from ra_jax.training import workdir as workdir_lib


def analyze(workdir: str, *, num_examples: int = 4) -> dict:
  """Computes the analyses of the module docstring and writes them beside
  the run's results (analysis.json, .npz)."""
  run = TrainedRun(workdir)
  query, query_labels = run.embed_split(run.split("query"))
  db, db_labels = run.embed_split(run.split("database"))
  out = {"step": run.step, "num_queries": len(query), "num_database": len(db)}
  curve_queries = data.evenly_spaced(len(query), 1000)
  out["precision_recall"] = retrieval.precision_recall(
      query[curve_queries], query_labels[curve_queries], db,
      db_labels).tolist()
  chosen = data.evenly_spaced(len(query), num_examples)
  _, ids = retrieval.Index.build(db, db_labels).search(query[chosen],
                                                        min(10, len(db)))
  out["examples"] = [{"query": int(q), "label": int(query_labels[q]),
                      "neighbours": [int(i) for i in row],
                      "neighbour_labels": [int(db_labels[i]) for i in row]}
                     for q, row in zip(chosen, ids)]
  shown = data.evenly_spaced(len(query), 2000)
  points, anchors = project(query[shown], run.anchors)
  with files.atomic_write(workdir_lib.path(workdir,
                                          workdir_lib.ANALYSIS_ARRAYS),
                          "wb") as f:
    np.savez(f, points=points, labels=query_labels[shown],
             anchors=anchors if anchors is not None else np.zeros((0, 2)))
  files.write_json(workdir_lib.path(workdir, workdir_lib.ANALYSIS), out)
  return out


def project(points: np.ndarray, anchors):
  """PCA to 2-D fitted on `points`; anchors projected with the same map."""
  mean = points.mean(axis=0)
  _, _, vt = np.linalg.svd(points - mean, full_matrices=False)
  basis = vt[:2].T
  return ((points - mean) @ basis,
          None if anchors is None else (anchors - mean) @ basis)
