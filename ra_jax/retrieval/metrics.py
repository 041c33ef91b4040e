"""Retrieval metrics, each a function of the ranks of a query's relevant items
(`ranking.RelevantRanks`).

For a query q with label y_q, rel_j = 1 when the item at rank j (1-based)
has label y_q; R = sum_j rel_j (the query itself excluded with
`exclude_self`); hits@k = sum_{j<=k} rel_j; P@j = hits@j / j. With r_1 <
r_2 < ... < r_R the ranks of the relevant items, P@r_i = i / r_i.

  map          AP = 1/R sum_j rel_j P@j (over all N ranks), mean over queries
  map@k        1/min(R, k) sum_{j<=k} rel_j P@j    (1 for a perfect top k)
  map@k_hits   1/hits@k    sum_{j<=k} rel_j P@j    (0 when hits@k = 0); the
               other convention in the literature, offered by name
  precision@k  hits@k / k
  recall@k     hits@k / R
  r_precision  hits@R / R
  map@r        1/R sum_{j<=R} rel_j P@j            (Musgrave et al., 2020)
  mrr          1 / (rank of the first relevant item)

Interpolated precision at recall level t (the precision-recall curve) is the
largest P@j over ranks j whose recall hits@j / R is at least t; it is
attained at a relevant item, so it is max_{i >= tR} i / r_i.

Queries with R = 0 are left out of every mean and counted in
`queries_without_relevant`. With `per_class=True` each metric is averaged
per query class first, then over classes (macro average). A truncated
ranking (top k) gives only the metrics at cut-offs it covers.
"""

from typing import Callable, Optional, Sequence

import numpy as np

from ra_jax.retrieval import ranking

RECALL_LEVELS = np.linspace(0.0, 1.0, 11)
# Metrics over all N ranks: defined for complete rankings only.
_FULL = ("map", "r_precision", "map@r", "mrr")


def per_query(ranks: ranking.RelevantRanks,
              ks: Sequence[int] = (1, 10, 100)) -> dict[str, np.ndarray]:
  """Each metric of the module docstring for every query, (Q,) float64;
  NaN for queries without relevant items."""
  r = ranks.ranks
  num_relevant = ranks.num_relevant.astype(np.float64)
  denominator = np.where(num_relevant > 0, num_relevant, np.nan)
  order = np.arange(1, r.shape[1] + 1)
  precision = np.where(np.isfinite(r), order / r, 0.0)  # P@r_i

  def up_to(cutoff):  # (sum of P@j rel_j over j <= cutoff, hits@cutoff)
    within = r <= cutoff
    return np.sum(precision * within, axis=1), np.sum(within, axis=1)

  out = {}
  if ranks.complete:
    top_r, hits_r = up_to(num_relevant[:, None])
    out["map"] = precision.sum(axis=1) / denominator
    out["r_precision"] = hits_r / denominator
    out["map@r"] = top_r / denominator
    out["mrr"] = np.where(num_relevant > 0, 1.0 / r[:, 0], np.nan)
  for k in ks:
    if k > ranks.length and not ranks.complete:
      raise ValueError(f"k={k} exceeds the rankings' length {ranks.length}")
    top_k, hits_k = up_to(k)
    out[f"precision@{k}"] = np.where(num_relevant > 0, hits_k / k, np.nan)
    out[f"recall@{k}"] = hits_k / denominator
    out[f"map@{k}"] = top_k / np.minimum(denominator, k)
    out[f"map@{k}_hits"] = np.where(
        num_relevant > 0, top_k / np.maximum(hits_k, 1), np.nan)
  return out


def interpolated_precision(ranks: ranking.RelevantRanks,
                           levels: np.ndarray = RECALL_LEVELS) -> np.ndarray:
  """(Q, len(levels)) interpolated precision at each recall level (NaN for
  queries without relevant items). Needs complete rankings."""
  if not ranks.complete:
    raise ValueError("the precision-recall curve needs complete rankings")
  r = ranks.ranks
  num_relevant = ranks.num_relevant
  order = np.arange(1, r.shape[1] + 1)
  precision = np.where(np.isfinite(r), order / r, 0.0)
  # best[:, i] = max over i' >= i of P@r_i': a running max from the end.
  best = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
  # First relevant item whose recall i / R reaches the level (a tolerance
  # keeps 0.3 * 10 from rounding up to the 4th item).
  first = np.ceil(levels[None, :] * num_relevant[:, None] - 1e-9).astype(int)
  first = np.clip(first, 1, np.maximum(num_relevant, 1)[:, None]) - 1
  curve = np.take_along_axis(best, first, axis=1)
  return np.where(num_relevant[:, None] > 0, curve, np.nan)


def summarize(values: dict[str, np.ndarray], query_labels: np.ndarray, *,
              per_class: bool = False) -> dict[str, float]:
  """Means over the queries with relevant items (or per-class means, then
  their mean), plus "num_queries" and "queries_without_relevant"."""
  query_labels = np.asarray(query_labels)
  some = next(iter(values.values()), np.zeros(len(query_labels)))
  keep = ~np.isnan(some)
  out = {}
  for name, column in values.items():
    kept, labels = column[keep], query_labels[keep]
    if not len(kept):
      out[name] = float("nan")
    elif per_class:
      out[name] = float(np.mean([kept[labels == c].mean()
                                 for c in np.unique(labels)]))
    else:
      out[name] = float(kept.mean())
  out["num_queries"] = int(keep.sum())
  out["queries_without_relevant"] = int((~keep).sum())
  return out


def retrieval_per_query(query_emb, query_labels, db_emb, db_labels, *,
                        ks: Sequence[int] = (1, 10, 100),
                        exclude_self: bool = False, chunk_size: int = 256,
                        kept_lists=None) -> dict[str, np.ndarray]:
  """`per_query` metrics (Q,) of the full L2 ranking of the database for
  every query; the arguments are those of `evaluate_retrieval`."""
  return rankings_per_query(
      query_emb, query_labels, db_emb, db_labels,
      [ranking.Ordering(kept_lists, exclude_self)], ks=ks,
      chunk_size=chunk_size)[0]


def rankings_per_query(query_emb, query_labels, db_emb, db_labels,
                       orderings: Sequence[ranking.Ordering], *,
                       ks: Sequence[int] = (1, 10, 100),
                       chunk_size: int = 256,
                       progress: Optional[Callable[[int], None]] = None
                       ) -> list[dict[str, np.ndarray]]:
  """`per_query` metrics (Q,) of each of `orderings`' full rankings, from
  one pass over the queries (each block's distances computed once).
  `progress(queries)`: called with each block's number of queries once
  every ordering has ranked it."""
  ranking.check_pair("query", query_emb, query_labels)
  ranking.check_pair("database", db_emb, db_labels)
  if np.shape(query_emb)[1] != np.shape(db_emb)[1]:
    raise ValueError(f"query embeddings have {np.shape(query_emb)[1]}"
                     f" dimensions, database embeddings"
                     f" {np.shape(db_emb)[1]}")
  if any(o.exclude_self for o in orderings) and (
      len(query_labels) != len(db_labels)):
    raise ValueError("exclude_self needs the queries to be the database:"
                     f" got {len(query_labels)} queries, {len(db_labels)}"
                     " database items")
  columns: list[list[dict]] = [[] for _ in orderings]
  for block, ranks in ranking.full_rankings(
      query_emb, query_labels, db_emb, db_labels, orderings,
      chunk_size=chunk_size):
    for column, one in zip(columns, ranks):
      column.append(per_query(one, ks))
    if progress is not None:
      progress(block.stop - block.start)
  return [{name: np.concatenate([b[name] for b in blocks])
           for name in blocks[0]} if blocks else {} for blocks in columns]


def evaluate_retrieval(query_emb, query_labels, db_emb, db_labels, *,
                       ks: Sequence[int] = (1, 10, 100),
                       exclude_self: bool = False, per_class: bool = False,
                       chunk_size: int = 256,
                       kept_lists=None) -> dict[str, float]:
  """Retrieval metrics of the full L2 ranking (see the module docstring).

  Args:
    query_emb: (Q, D) query embeddings. query_labels: (Q,) ints.
    db_emb: (N, D) database embeddings. db_labels: (N,) ints.
    ks: cut-offs for precision@k, recall@k, map@k, map@k_hits.
    exclude_self: the queries are the database (Q == N, same order): remove
      each query's own entry from its ranking.
    per_class: macro average over query classes instead of over queries.
    chunk_size: queries whose distances are computed together; memory is
      O(chunk_size * N).
    kept_lists: (db_lists (N,), query_lists (Q, L)) ints: rank a two-stage
      search's full ranking instead, the items of the query's kept lists
      first (see `ranking.full_ranking`; `two_stage_full_ranking`).

  Returns:
    {metric: value} plus "num_queries" (evaluated) and
    "queries_without_relevant" (left out).
  """
  values = retrieval_per_query(query_emb, query_labels, db_emb, db_labels,
                               ks=ks, exclude_self=exclude_self,
                               chunk_size=chunk_size, kept_lists=kept_lists)
  return summarize(values, query_labels, per_class=per_class)


def evaluate_ranking(indices, query_labels, db_labels,
                     ks: Sequence[int] = (1, 10, 100)) -> dict[str, float]:
  """Metrics of given rankings (Q, K) of database indices (-1 = no result,
  not relevant), e.g. from `two_stage_search`. R counts all of the query's
  relevant database items, as in `evaluate_retrieval`, so the two agree on
  exact-search rankings. Complete rankings (every database item, K = N) also
  give mAP, R-precision, map@r and MRR."""
  ranks = ranking.ranks_from_rankings(indices, query_labels, db_labels)
  return summarize(per_query(ranks, ks), query_labels)


def precision_recall(query_emb, query_labels, db_emb, db_labels, *,
                     levels: np.ndarray = RECALL_LEVELS,
                     chunk_size: int = 256) -> np.ndarray:
  """Mean interpolated precision at `levels` (full ranking), over the
  queries with relevant items."""
  curves = [interpolated_precision(block, levels)
            for _, block in ranking.full_ranking(
                query_emb, query_labels, db_emb, db_labels,
                chunk_size=chunk_size)]
  curves = np.concatenate(curves)
  return np.nanmean(curves, axis=0)


def nearest_anchor_accuracy(query_emb, query_labels, anchors) -> float:
  """Share of queries whose own class anchor is the nearest anchor (L2):
  precision@1 of ranking the C anchors (anchor c has label c), ties
  counted against the query."""
  anchors = np.asarray(anchors)
  return evaluate_retrieval(query_emb, query_labels, anchors,
                            np.arange(len(anchors)), ks=(1,))["precision@1"]
