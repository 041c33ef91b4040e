"""Retrieval metrics over the full ranking of a database.

For a query q with label y_q, the database is ranked by squared L2 distance
(ascending; a relevant and an irrelevant item at exactly the same distance
count the irrelevant one first, the pessimistic choice). rel_j = 1 when the item at rank j
(1-based) has label y_q; R = sum_j rel_j (the query itself excluded with
`exclude_self`); hits@k = sum_{j<=k} rel_j; P@j = hits@j / j.

  map          AP = 1/R sum_j rel_j P@j (over all N ranks), mean over queries
  map@k        1/min(R, k) sum_{j<=k} rel_j P@j    (1 for a perfect top k)
  map@k_hits   1/hits@k    sum_{j<=k} rel_j P@j    (0 when hits@k = 0); the
               other convention in the literature, offered by name
  precision@k  hits@k / k
  recall@k     hits@k / R
  r_precision  hits@R / R
  map@r        1/R sum_{j<=R} rel_j P@j            (Musgrave et al., 2020)
  mrr          1 / (rank of the first relevant item)

Queries with R = 0 are left out of every mean and counted in
`queries_without_relevant`. With `per_class=True` each metric is averaged
per query class first, then over classes (macro average).
"""

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from ra_jax.distances import pairwise_squared_distances


def _query_metrics(distances, relevant_mask, ks):
  """Metrics of one query from its distances (N,) and relevance (N,) bool.

  Only the ranks of the relevant items matter: sorting the relevant and the
  irrelevant distances separately and merging them with a binary search is
  much cheaper than an argsort of all N items plus a gather of their labels.
  """
  relevant = np.sort(distances[relevant_mask])
  others = np.sort(distances[~relevant_mask])
  num_relevant = len(relevant)
  if num_relevant == 0:
    return None
  order = np.arange(1, num_relevant + 1)
  # 1-based rank of each relevant item; ties go to the irrelevant item.
  ranks = order + np.searchsorted(others, relevant, side="right")
  precision = order / ranks  # P@rank_j at the j-th relevant item
  cum_precision = np.cumsum(precision)

  def sum_up_to(k):  # sum of P@j * rel_j over ranks j <= k, and hits@k
    hits = int(np.searchsorted(ranks, k, side="right"))
    return (cum_precision[hits - 1] if hits else 0.0), hits

  top_r, hits_r = sum_up_to(num_relevant)
  out = {"map": cum_precision[-1] / num_relevant,
         "r_precision": hits_r / num_relevant,
         "map@r": top_r / num_relevant,
         "mrr": 1.0 / ranks[0]}
  for k in ks:
    top_k, hits_k = sum_up_to(k)
    out[f"precision@{k}"] = hits_k / k
    out[f"recall@{k}"] = hits_k / num_relevant
    out[f"map@{k}"] = top_k / min(num_relevant, k)
    out[f"map@{k}_hits"] = top_k / hits_k if hits_k else 0.0
  return out


def evaluate_retrieval(query_emb, query_labels, db_emb, db_labels, *,
                       ks: Sequence[int] = (1, 10, 100),
                       exclude_self: bool = False, per_class: bool = False,
                       chunk_size: int = 256) -> dict[str, float]:
  """Retrieval metrics (see the module docstring for each formula).

  Args:
    query_emb: (Q, D) query embeddings. query_labels: (Q,) ints.
    db_emb: (N, D) database embeddings. db_labels: (N,) ints.
    ks: cut-offs for precision@k, recall@k, map@k, map@k_hits.
    exclude_self: the queries are the database (Q == N, same order): remove
      each query's own entry from its ranking.
    per_class: macro average over query classes instead of over queries.
    chunk_size: queries whose distances are computed together; memory is
      O(chunk_size * N).

  Returns:
    {metric: value} plus "num_queries" (evaluated) and
    "queries_without_relevant" (left out).
  """
  query_labels = np.asarray(query_labels)
  db_labels = np.asarray(db_labels)
  if exclude_self and len(query_labels) != len(db_labels):
    raise ValueError("exclude_self needs the queries to be the database:"
                     f" got {len(query_labels)} queries, {len(db_labels)}"
                     " database items")
  db = jnp.asarray(db_emb, jnp.float32)
  masks = {c: db_labels == c for c in np.unique(query_labels)}
  rows, keep = [], np.zeros(len(query_labels), bool)
  for start in range(0, len(query_labels), chunk_size):
    stop = min(start + chunk_size, len(query_labels))
    # Distances on device, one matrix product per chunk; ranking on the host.
    distances = np.asarray(pairwise_squared_distances(
        jnp.asarray(query_emb[start:stop], jnp.float32), db))
    for offset, row in enumerate(distances):
      query = start + offset
      relevant = masks[query_labels[query]]
      if exclude_self:
        relevant, row = relevant.copy(), row.copy()
        relevant[query], row[query] = False, np.inf  # ranked last, irrelevant
      metrics = _query_metrics(row, relevant, ks)
      if metrics is not None:
        rows.append(metrics)
        keep[query] = True
  labels = query_labels[keep]
  result = {}
  for name in (rows[0] if rows else {}):
    values = np.asarray([r[name] for r in rows])
    if per_class:
      result[name] = float(np.mean([values[labels == c].mean()
                                    for c in np.unique(labels)]))
    else:
      result[name] = float(values.mean()) if len(values) else float("nan")
  result["num_queries"] = int(keep.sum())
  result["queries_without_relevant"] = int((~keep).sum())
  return result


def evaluate_ranking(indices, query_labels, db_labels,
                     ks: Sequence[int] = (1, 10, 100)) -> dict[str, float]:
  """map@k and precision@k of given rankings (Q, K) of database indices
  (-1 = no result, not relevant), e.g. from `two_stage_search`. R counts all
  of the query's relevant database items, as in `evaluate_retrieval`, so the
  two agree on exact-search rankings. Queries with R = 0 are left out."""
  indices = np.asarray(indices)
  query_labels = np.asarray(query_labels)
  db_labels = np.asarray(db_labels)
  relevant = (db_labels[np.maximum(indices, 0)] == query_labels[:, None]) & (
      indices >= 0)
  counts = np.bincount(db_labels, minlength=int(max(db_labels.max(),
                                                    query_labels.max())) + 1)
  num_relevant = counts[query_labels].astype(np.float64)
  keep = num_relevant > 0
  hits = np.cumsum(relevant, axis=1)
  gain = np.cumsum(np.where(relevant, hits / np.arange(1, indices.shape[1] + 1),
                            0.0), axis=1)
  out = {}
  for k in ks:
    if k > indices.shape[1]:
      raise ValueError(f"k={k} exceeds the rankings' length"
                       f" {indices.shape[1]}")
    out[f"precision@{k}"] = float(np.mean(hits[keep, k - 1] / k))
    out[f"map@{k}"] = float(np.mean(gain[keep, k - 1] /
                                    np.minimum(num_relevant[keep], k)))
  return out
