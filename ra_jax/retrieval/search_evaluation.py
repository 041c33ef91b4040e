"""Exact against two-stage search, measured: for each way of searching, the
metrics of its top-k rankings and its wall time.

The one loop behind the trainer's final evaluation (label lists) and the
report's two-stage table (label lists and nearest-anchor lists).
"""

import time
from typing import Callable, Optional, Sequence

import numpy as np

from ra_jax.distances import nearest
from ra_jax.retrieval import metrics
from ra_jax.retrieval.index import Index
from ra_jax.retrieval.index import ListSource


def timed(search: Callable, repeats: int):
  """(median seconds of `repeats` calls after a warm-up call, the result).
  The warm-up compiles and builds the lists, which a served index does
  once."""
  result = search()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = search()
    times.append(time.perf_counter() - start)
  return float(np.median(times)), result


def compare_searches(query: np.ndarray, query_labels: np.ndarray,
                     db: np.ndarray, db_labels: np.ndarray,
                     anchors: Optional[np.ndarray], *, k: int,
                     ks: Sequence[int], num_lists: Sequence[int] = (1, 2),
                     list_sources: Sequence[ListSource] = ("labels",),
                     repeats: int = 1) -> list[dict]:
  """One row per search: {"search": "exact" | "two-stage", "lists",
  "list_source", "seconds", **`metrics.evaluate_ranking` of its top k}.

  Args:
    query, query_labels: (Q, D), (Q,). db, db_labels: (N, D), (N,).
    anchors: (C, D) class anchors, or None (exact search only).
    k: results per query (<= N). ks: metric cut-offs (<= k).
    num_lists: lists stage 1 keeps; counts above C are an error.
    list_sources: "labels" (an item is in its class's list) and/or
      "anchors" (in its nearest anchor's list).
    repeats: timed calls after the warm-up; the median is reported.
  """
  rows = []
  exact = Index.build(db, db_labels)
  seconds, (_, ids) = timed(lambda: exact.search(query, k), repeats)
  rows.append({"search": "exact", "lists": None, "list_source": None,
               "seconds": seconds,
               **metrics.evaluate_ranking(ids, query_labels, db_labels, ks)})
  if anchors is None:
    return rows
  too_many = [n for n in num_lists if not 1 <= n <= len(anchors)]
  if too_many:
    raise ValueError(f"lists kept {too_many}: must be in [1, {len(anchors)}]"
                     " (the number of anchors)")
  for source in list_sources:
    index = Index.build(db, db_labels, anchors=anchors, list_source=source)
    for lists in num_lists:
      seconds, (_, ids) = timed(lambda: index.search(
          query, k, two_stage=True, num_lists=lists), repeats)
      rows.append({"search": "two-stage", "lists": lists,
                   "list_source": source, "seconds": seconds,
                   **metrics.evaluate_ranking(ids, query_labels, db_labels,
                                              ks)})
  return rows


def two_stage_full_ranking(query: np.ndarray, query_labels: np.ndarray,
                           db: np.ndarray, db_labels: np.ndarray,
                           anchors: np.ndarray, *, num_lists: int,
                           ks: Sequence[int] = (1, 10, 100),
                           list_source: ListSource = "labels") -> dict:
  """Metrics of the full ranking a two-stage search implies (the paper's
  protocol): stage 1 keeps the `num_lists` lists of the anchors nearest the
  query; the kept lists' items come first, by distance, then every other
  database item, by distance. So mAP covers the whole database, and equals
  exact search's when stage 1 keeps every list.

  Returns `metrics.evaluate_retrieval`'s metrics plus
  "distance_computations", the mean number of distances a query costs
  (C anchors + the kept lists' items; exact search costs N), and
  "distance_fraction", that number over N.

  `list_source`: "labels" (an item is in its class's list; labels must be
  anchor indices) or "anchors" (in its nearest anchor's list).
  """
  anchors = np.asarray(anchors, np.float32)
  db_labels = np.asarray(db_labels)
  if not 1 <= num_lists <= len(anchors):
    raise ValueError(f"num_lists {num_lists}: must be in [1, {len(anchors)}]"
                     " (the number of anchors)")
  if list_source == "labels":
    if db_labels.size and (db_labels.min() < 0 or
                           db_labels.max() >= len(anchors)):
      raise ValueError(f"label lists need database labels in [0,"
                       f" {len(anchors)}) (one anchor per class), got"
                       f" [{db_labels.min()}, {db_labels.max()}]")
    db_lists = db_labels
  elif list_source == "anchors":
    db_lists = np.asarray(nearest(db, anchors)[1][:, 0])
  else:
    raise ValueError(f"list_source must be 'labels' or 'anchors', got"
                     f" {list_source!r}")
  kept = np.asarray(nearest(query, anchors, num_lists)[1])
  sizes = np.bincount(db_lists, minlength=len(anchors))
  computations = float(np.mean(len(anchors) + sizes[kept].sum(axis=1)))
  out = metrics.evaluate_retrieval(query, query_labels, db, db_labels, ks=ks,
                                   kept_lists=(db_lists, kept))
  return {**out, "distance_computations": computations,
          "distance_fraction": computations / len(db_labels)}
