"""Exact against two-stage search, measured: each way of searching is
evaluated once — its top-k search timed, and the full ranking it implies
ranked from the same stage-1 choice — as one structured row.

The one path behind the trainer's final evaluation and the report's search
tables.
"""

from typing import Optional, Sequence

import numpy as np

from ra_jax.distances import nearest
from ra_jax.retrieval import metrics
from ra_jax.retrieval import two_stage
from ra_jax.retrieval.index import Index
from ra_jax.retrieval.index import ListSource
from ra_jax.timing import median_seconds

EXACT = "exact"
TWO_STAGE = "two_stage"


def _db_lists(db, db_labels, anchors, list_source: ListSource) -> np.ndarray:
  """Each database item's list: its label ("labels") or its nearest
  anchor ("anchors")."""
  if list_source == "labels":
    if db_labels.size and (db_labels.min() < 0 or
                           db_labels.max() >= len(anchors)):
      raise ValueError(f"label lists need database labels in [0,"
                       f" {len(anchors)}) (one anchor per class), got"
                       f" [{db_labels.min()}, {db_labels.max()}]")
    return db_labels
  if list_source == "anchors":
    return np.asarray(nearest(db, anchors)[1][:, 0])
  raise ValueError(f"list_source must be 'labels' or 'anchors', got"
                   f" {list_source!r}")


def two_stage_full_ranking(query: np.ndarray, query_labels: np.ndarray,
                           db: np.ndarray, db_labels: np.ndarray,
                           anchors: np.ndarray, *, num_lists: int,
                           ks: Sequence[int] = (1, 10, 100),
                           list_source: ListSource = "labels",
                           kept: Optional[np.ndarray] = None) -> dict:
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
  anchor indices) or "anchors" (in its nearest anchor's list). `kept`:
  (Q, num_lists) stage 1's choice when already made (`Index.stage_one`).
  """
  anchors = np.asarray(anchors, np.float32)
  db_labels = np.asarray(db_labels)
  two_stage.check_num_lists(num_lists, len(anchors))
  db_lists = _db_lists(db, db_labels, anchors, list_source)
  if kept is None:
    kept = np.asarray(two_stage.stage_one(query, anchors, num_lists))
  sizes = np.bincount(db_lists, minlength=len(anchors))
  computations = float(np.mean(len(anchors) + sizes[kept].sum(axis=1)))
  out = metrics.evaluate_retrieval(query, query_labels, db, db_labels, ks=ks,
                                   kept_lists=(db_lists, kept))
  return {**out, "distance_computations": computations,
          "distance_fraction": computations / len(db_labels)}


def evaluate_searches(query: np.ndarray, query_labels: np.ndarray,
                      db: np.ndarray, db_labels: np.ndarray,
                      anchors: Optional[np.ndarray], *,
                      ks: Sequence[int] = (1, 10, 100),
                      k: Optional[int] = None,
                      num_lists: Sequence[int] = (1, 2),
                      list_sources: Sequence[ListSource] = ("labels",),
                      repeats: int = 1, exclude_self: bool = False
                      ) -> tuple[list[dict], dict[str, np.ndarray]]:
  """Exact search, then two-stage search with each list source and each
  number of lists kept, each as one row:

    {"search": "exact" | "two_stage", "list_source": None | "labels" |
     "anchors", "lists": None | n, "seconds": median wall time of the top-k
     search (stage 1 + stage 2 for two-stage), "distance_computations",
     "distance_fraction": per query, and over exact search's N,
     "metrics": `metrics.evaluate_retrieval` of the full ranking}

  A two-stage row's stage 1 runs once: the timed search and the full
  ranking (kept lists first, then the rest) both use its choice.

  Args:
    query, query_labels: (Q, D), (Q,). db, db_labels: (N, D), (N,).
    anchors: (C, D) class anchors, or None (the exact row only).
    ks: metric cut-offs. k: results of the timed top-k searches (default
      max(ks), at most N).
    num_lists: lists stage 1 keeps, each in [1, C].
    list_sources: "labels" (an item is in its class's list) and/or
      "anchors" (in its nearest anchor's list).
    repeats: timed calls after a warm-up; the median is reported.
    exclude_self: the queries are the database (exact row only).

  Returns:
    (rows, the exact ranking's per-query metrics (Q,) each, for paired
    tests between runs).
  """
  db_labels = np.asarray(db_labels)
  k = min(k or max(ks), len(db_labels))
  exact_index = Index.build(db, db_labels)
  seconds, _ = median_seconds(lambda: exact_index.search(query, k), repeats)
  per_query = metrics.retrieval_per_query(query, query_labels, db, db_labels,
                                          ks=ks, exclude_self=exclude_self)
  rows = [{"search": EXACT, "list_source": None, "lists": None,
           "seconds": seconds, "distance_computations": float(len(db_labels)),
           "distance_fraction": 1.0,
           "metrics": metrics.summarize(per_query, query_labels)}]
  if anchors is None:
    return rows, per_query
  anchors = np.asarray(anchors, np.float32)
  two_stage.check_num_lists(tuple(num_lists), len(anchors), "lists kept")
  for source in list_sources:
    index = Index.build(db, db_labels, anchors=anchors, list_source=source)
    for lists in num_lists:
      stage_one_seconds, kept = median_seconds(
          lambda: index.stage_one(query, lists), repeats)
      stage_two_seconds, _ = median_seconds(
          lambda: index.search(query, k, two_stage=True, num_lists=lists,
                               kept=kept), repeats)
      ranked = two_stage_full_ranking(query, query_labels, db, db_labels,
                                      anchors, num_lists=lists, ks=ks,
                                      list_source=source, kept=kept)
      computations = ranked.pop("distance_computations")
      fraction = ranked.pop("distance_fraction")
      rows.append({"search": TWO_STAGE, "list_source": source,
                   "lists": lists,
                   "seconds": stage_one_seconds + stage_two_seconds,
                   "distance_computations": computations,
                   "distance_fraction": fraction, "metrics": ranked})
  return rows, per_query


def find_row(rows: Sequence[dict], search: str = TWO_STAGE,
             list_source: Optional[str] = "labels",
             lists: Optional[int] = 1) -> Optional[dict]:
  """The row of `rows` with this search, list source and lists kept (the
  exact row: `find_row(rows, "exact", None, None)`), or None."""
  return next((row for row in rows if row["search"] == search and
               row["list_source"] == list_source and row["lists"] == lists),
              None)
