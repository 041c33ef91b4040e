"""Exact against two-stage search, measured: each way of searching is
evaluated once — its top-k search timed, and the full ranking it implies
ranked from the same stage-1 choice — as one structured row.

The one path behind the trainer's final evaluation and the report's search
tables. Stage 1 may use any class vectors (`ClassVectors`): a loss's own,
or the database's class centroids.
"""

from typing import Callable, Mapping, Optional, Sequence, Union

import jax.numpy as jnp
import numpy as np

from ra_jax.retrieval import metrics
from ra_jax.retrieval import ranking
from ra_jax.retrieval import two_stage
from ra_jax.retrieval.class_vectors import ClassVectors
from ra_jax.retrieval.exact import exact_search
from ra_jax.retrieval.index import ListSource
from ra_jax.timing import median_seconds

EXACT = "exact"
TWO_STAGE = "two_stage"
# The name of a loss's own class vectors in the rows; "centroids" names the
# database's class centroids (`class_vectors.centroids`).
LEARNED = "learned"
CENTROIDS = "centroids"

Vectors = Union[ClassVectors, np.ndarray]


def _as_vectors(vectors: Vectors) -> ClassVectors:
  """Class vectors; a bare (C, D) array is scored by L2 (anchors)."""
  return vectors if isinstance(vectors, ClassVectors) else ClassVectors(
      np.asarray(vectors, np.float32))


def _db_lists(db, db_labels, vectors: ClassVectors,
              list_source: ListSource) -> np.ndarray:
  """Each database item's list: its label ("labels") or its best class by
  the same score stage 1 uses ("anchors")."""
  if list_source == "labels":
    if db_labels.size and (db_labels.min() < 0 or
                           db_labels.max() >= len(vectors)):
      raise ValueError(f"label lists need database labels in [0,"
                       f" {len(vectors)}) (one anchor per class), got"
                       f" [{db_labels.min()}, {db_labels.max()}]")
    return db_labels
  if list_source == "anchors":
    return vectors.top(db, 1)[:, 0]
  raise ValueError(f"list_source must be 'labels' or 'anchors', got"
                   f" {list_source!r}")


def two_stage_full_ranking(query: np.ndarray, query_labels: np.ndarray,
                           db: np.ndarray, db_labels: np.ndarray,
                           anchors: Vectors, *, num_lists: int,
                           ks: Sequence[int] = (1, 10, 100),
                           list_source: ListSource = "labels",
                           kept: Optional[np.ndarray] = None) -> dict:
  """Metrics of the full ranking a two-stage search implies (the paper's
  protocol): stage 1 keeps the `num_lists` lists of the classes that score
  best for the query; the kept lists' items come first, by distance, then
  every other database item, by distance. So mAP covers the whole
  database, and equals exact search's when stage 1 keeps every list.

  Returns `metrics.evaluate_retrieval`'s metrics plus
  "distance_computations", the mean number of distances a query costs
  (C class vectors + the kept lists' items; exact search costs N),
  "distance_fraction", that number over N, and "stage_one_accuracy", the
  share of queries whose own class's list is among the kept ones.

  `anchors`: (C, D) anchors scored by L2, or any `ClassVectors`.
  `list_source`: "labels" (an item is in its class's list; labels must be
  class ids) or "anchors" (in the list of its best class vector).
  `kept`: (Q, num_lists) stage 1's choice when already made.
  """
  vectors = _as_vectors(anchors)
  db_labels = np.asarray(db_labels)
  two_stage.check_num_lists(num_lists, len(vectors))
  db_lists = _db_lists(db, db_labels, vectors, list_source)
  if kept is None:
    kept = vectors.top(query, num_lists)
  out = metrics.evaluate_retrieval(query, query_labels, db, db_labels, ks=ks,
                                   kept_lists=(db_lists, kept))
  return {**out, **stage_one_cost(len(vectors), db_lists, kept,
                                   query_labels)}


def stage_one_cost(num_vectors: int, db_lists: np.ndarray,
                   kept: np.ndarray, query_labels: np.ndarray) -> dict[str, float]:
  """A two-stage search's cost and stage-1 accuracy: the mean distances a
  query computes (C class vectors + the kept lists' items), that over N,
  and the share of queries whose own class's list is kept."""
  sizes = np.bincount(db_lists, minlength=num_vectors)
  computations = float(np.mean(num_vectors + sizes[kept].sum(axis=1)))
  hit = np.any(kept == np.asarray(query_labels)[:, None], axis=1)
  return {"distance_computations": computations,
          "distance_fraction": computations / len(db_lists),
          "stage_one_accuracy": float(np.mean(hit))}


def evaluate_searches(query: np.ndarray, query_labels: np.ndarray,
                      db: np.ndarray, db_labels: np.ndarray,
                      class_vectors: Union[None, Vectors,
                                           Mapping[str, Vectors]], *,
                      ks: Sequence[int] = (1, 10, 100),
                      k: Optional[int] = None,
                      num_lists: Sequence[int] = (1, 2),
                      list_sources: Sequence[ListSource] = ("labels",),
                      repeats: int = 1, exclude_self: bool = False,
                      progress: Optional[Callable[[dict], None]] = None
                      ) -> tuple[list[dict], dict[str, np.ndarray]]:
  """Exact search, then two-stage search with each set of class vectors,
  each list source and each number of lists kept, each as one row:

    {"search": "exact" | "two_stage", "class_vectors": None | the set's
     name, "list_source": None | "labels" | "anchors", "lists": None | n,
     "seconds": median wall time of the top-k search (stage 1 + stage 2
     for two-stage), "distance_computations", "distance_fraction": per
     query, and over exact search's N, "stage_one_accuracy" (two-stage:
     the share of queries whose class's list is kept), "metrics":
     `metrics.evaluate_retrieval` of the full ranking}

  A two-stage row's stage 1 runs once: the timed search and the full
  ranking (kept lists first, then the rest) both use its choice.

  Args:
    query, query_labels: (Q, D), (Q,). db, db_labels: (N, D), (N,).
    class_vectors: name -> class vectors ((C, D) anchors scored by L2, or
      `ClassVectors`), e.g. {"learned": ..., "centroids": ...}; a single
      set is named "learned"; None: the exact row only.
    ks: metric cut-offs. k: results of the timed top-k searches (default
      max(ks), at most N).
    num_lists: lists stage 1 keeps, each in [1, C].
    list_sources: "labels" (an item is in its class's list) and/or
      "anchors" (in its best class vector's list).
    repeats: timed calls after a warm-up; the median is reported.
    exclude_self: the queries are the database (exact row only).
    progress: called with the number of queries of each block once every
      search has ranked it (a progress bar).

  Returns:
    (rows, the exact ranking's per-query metrics (Q,) each, for paired
    tests between runs).
  """
  db_labels = np.asarray(db_labels)
  k = min(k or max(ks), len(db_labels))
  db = np.asarray(db, np.float32)
  # On the device once, as an index holds it: a host array would be copied
  # over in every timed call.
  db_device = jnp.asarray(db)
  seconds, _ = median_seconds(lambda: exact_search(query, db_device, k),
                              repeats)
  rows = [{"search": EXACT, "class_vectors": None, "list_source": None,
           "lists": None, "seconds": seconds,
           "distance_computations": float(len(db_labels)),
           "distance_fraction": 1.0, "stage_one_accuracy": None}]
  orderings = [ranking.Ordering(exclude_self=exclude_self)]
  if class_vectors is not None and not isinstance(class_vectors, Mapping):
    class_vectors = {LEARNED: class_vectors}
  for name, vectors in (class_vectors or {}).items():
    vectors = _as_vectors(vectors)
    two_stage.check_num_lists(tuple(num_lists), len(vectors), "lists kept")
    for source in list_sources:
      db_lists = _db_lists(db, db_labels, vectors, source)
      lists_table = two_stage.build_lists(db_device, db_lists, len(vectors))
      for lists in num_lists:
        # stage 1 runs once: the timed search and the full ranking both
        # use its choice
        stage_one_seconds, kept = median_seconds(
            lambda: vectors.top(query, lists), repeats)
        stage_two_seconds, _ = median_seconds(
            lambda: two_stage.two_stage_search(
                query, vectors.vectors, db_device, None, num_lists=lists,
                k=k, lists=lists_table, kept=kept), repeats)
        rows.append({"search": TWO_STAGE, "class_vectors": name,
                     "list_source": source, "lists": lists,
                     "seconds": stage_one_seconds + stage_two_seconds,
                     **stage_one_cost(len(vectors), db_lists, kept,
                                  query_labels)})
        orderings.append(ranking.Ordering((db_lists, kept)))
  # Every full ranking from one pass: each block's distances once.
  per_query = metrics.rankings_per_query(query, query_labels, db, db_labels,
                                         orderings, ks=ks, progress=progress)
  for row, values in zip(rows, per_query):
    row["metrics"] = metrics.summarize(values, query_labels)
  return rows, per_query[0]


def find_row(rows: Sequence[dict], search: str = TWO_STAGE,
             list_source: Optional[str] = "labels",
             lists: Optional[int] = 1,
             class_vectors: Optional[str] = LEARNED) -> Optional[dict]:
  """The row of `rows` with this search, list source, lists kept and class
  vectors (the exact row: `find_row(rows, "exact", None, None, None)`), or
  None. Rows written before class vectors had names are a loss's own."""
  if search == EXACT:
    class_vectors = None
  return next((row for row in rows if row["search"] == search and
               row["list_source"] == list_source and row["lists"] == lists
               and row.get("class_vectors", LEARNED if row["lists"] else None)
               == class_vectors), None)
