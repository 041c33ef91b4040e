"""What a report needs from a run's embeddings, computed once and saved as
`analysis.json` + `analysis.npz` in its work dir (so the report itself only
reads files):

- two-stage vs exact search over all queries: mAP@100, P@10, P@100 and
  wall time (median of 3 warm calls) for 1, 2, 3 lists kept, with label lists and with lists from
  each database item's nearest anchor;
- a precision-recall curve (interpolated precision at 11 recall levels,
  averaged over up to 1,000 evenly spaced queries, full ranking);
- a 2-D PCA projection of up to 2,000 query embeddings and the anchors;
- example queries with their top-10 exact neighbours.
"""

import os
import time

import numpy as np

from ra_jax import retrieval
from ra_jax.training import trained
from ra_jax.training.loop import write_json

RECALL_LEVELS = np.linspace(0.0, 1.0, 11)


def analyze(workdir: str, *, num_examples: int = 4) -> dict:
  run = trained.TrainedRun(workdir)
  query, query_labels = run.embed_split(run.split("query"))
  db, db_labels = run.embed_split(run.split("database"))
  out = {"step": run.step, "num_queries": len(query), "num_database": len(db)}
  k = min(100, len(db))
  ks = tuple(x for x in (10, 100) if x <= len(db))
  exact_index = retrieval.Index.build(db, db_labels)
  rows = []
  seconds, (_, ids) = _timed(lambda: exact_index.search(query, k))
  rows.append({"search": "exact", "lists": None, "list_source": None,
               "seconds": seconds,
               **retrieval.evaluate_ranking(ids, query_labels, db_labels,
                                            ks=ks)})
  if run.anchors is not None:
    for source in ("labels", "anchors"):
      index = retrieval.Index.build(db, db_labels, anchors=run.anchors,
                                    list_source=source)
      for lists in (1, 2, 3):
        if lists > len(run.anchors):
          continue
        seconds, (_, ids) = _timed(lambda: index.search(
            query, k, two_stage=True, num_lists=lists))
        rows.append({"search": "two-stage", "lists": lists,
                     "list_source": source, "seconds": seconds,
                     **retrieval.evaluate_ranking(ids, query_labels,
                                                  db_labels, ks=ks)})
  out["search"] = rows
  out["precision_recall"] = precision_recall(query, query_labels, db,
                                             db_labels).tolist()
  chosen = np.linspace(0, len(query) - 1, num_examples, dtype=int)
  _, ids = exact_index.search(query[chosen], min(10, len(db)))
  out["examples"] = [{"query": int(q), "label": int(query_labels[q]),
                      "neighbours": [int(i) for i in row],
                      "neighbour_labels": [int(db_labels[i]) for i in row]}
                     for q, row in zip(chosen, ids)]
  shown = np.linspace(0, len(query) - 1, min(2000, len(query)), dtype=int)
  points, anchors = project(query[shown], run.anchors)
  np.savez(os.path.join(workdir, "analysis.npz"), points=points,
           labels=query_labels[shown],
           anchors=anchors if anchors is not None else np.zeros((0, 2)))
  write_json(os.path.join(workdir, "analysis.json"), out)
  return out


def _timed(search, repeats: int = 3):
  """(median seconds of `repeats` warm calls, the result)."""
  result = search()  # compiles, builds the lists
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = search()
    times.append(time.perf_counter() - start)
  return float(np.median(times)), result


def precision_recall(query, query_labels, db, db_labels,
                     max_queries: int = 1000) -> np.ndarray:
  """Mean interpolated precision at RECALL_LEVELS (11,), full ranking.
  Interpolated precision at recall r = max precision at any recall >= r."""
  chosen = np.linspace(0, len(query) - 1, min(max_queries, len(query)),
                       dtype=int)
  curves = []
  for part in np.array_split(chosen, max(1, len(chosen) // 100)):
    d = retrieval_distances(query[part], db)
    order = np.argsort(d, axis=1, kind="stable")
    relevant = db_labels[order] == query_labels[part][:, None]
    hits = np.cumsum(relevant, axis=1)
    total = hits[:, -1:]
    precision = hits / np.arange(1, db.shape[0] + 1)
    recall = hits / np.maximum(total, 1)
    # max precision at recall >= r: a running max from the end of the list
    best = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    for row in range(len(part)):
      if total[row, 0] == 0:
        continue
      at = np.searchsorted(recall[row], RECALL_LEVELS, side="left")
      curves.append(best[row, np.minimum(at, db.shape[0] - 1)])
  return np.mean(curves, axis=0)


def retrieval_distances(query, db) -> np.ndarray:
  """Squared L2 distances (Q, N), float64 for a stable order."""
  q = query.astype(np.float64)
  x = db.astype(np.float64)
  return (q * q).sum(1)[:, None] - 2 * q @ x.T + (x * x).sum(1)[None]


def project(points: np.ndarray, anchors):
  """PCA to 2-D fitted on `points`; anchors projected with the same map."""
  mean = points.mean(axis=0)
  _, _, vt = np.linalg.svd(points - mean, full_matrices=False)
  basis = vt[:2].T
  return ((points - mean) @ basis,
          None if anchors is None else (anchors - mean) @ basis)
