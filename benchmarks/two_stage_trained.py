"""Two-stage search against exact search on trained runs' own embeddings.

For each run (a work dir or a results/ folder with params.msgpack): embed
its query and database splits, build one `retrieval.Index` over the
database (lists by label), then time, alternating round by round after one
warm-up call each:
- exact search, top k;
- two-stage search, top k, with 1, 2, ... lists kept, stage 1 (included in
  the time) by the loss's own class vectors in their score (`learned`, if
  the loss has any) and by the database's class centroids (`centroids`, the
  control that needs only labels).
Prints queries/s (median of `--repeats` rounds), the speed-up over exact,
the share of the database's distances computed, and mAP@k / P@k of each
search, so the speed is read beside what it costs. The synthetic
counterpart is benchmarks/search_speed.py.

  python -m benchmarks.two_stage_trained RUN [RUN ...] [--k 100] \
      [--lists 1 2 3] [--repeats 5] [--queries 0] [--json out.json]
"""

import argparse
import statistics
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np

from ra_jax import files, retrieval
from ra_jax.trained import TrainedRun
from ra_jax.training import evaluation


def class_vector_sets(run: TrainedRun, db: np.ndarray, db_labels: np.ndarray
                      ) -> dict[str, retrieval.ClassVectors]:
  """Stage 1's candidates: the loss's own class vectors (if any), then the
  database's class centroids in the run's geometry."""
  sets = {}
  learned = evaluation.class_vectors_of(run.state, run.exp.loss)
  if learned is not None:
    sets[retrieval.LEARNED] = learned
  sets[retrieval.CENTROIDS] = retrieval.centroids(
      db, db_labels, run.source.num_classes,
      sphere=run.exp.geometry == "sphere")
  return sets


def compare(query: np.ndarray, query_labels: np.ndarray, db: np.ndarray,
            db_labels: np.ndarray,
            vector_sets: dict[str, retrieval.ClassVectors], *, k: int,
            lists: Sequence[int], repeats: int) -> list[dict[str, Any]]:
  """One record per search: exact first, then each (class vectors, lists
  kept) two-stage search; times are medians over `repeats` rounds, each
  round timing every search once."""
  num_classes = len(next(iter(vector_sets.values())))
  # Lists by label; stage 1 is made outside the index (`kept`), so the
  # index's anchors only say how many lists there are.
  index = retrieval.Index.build(
      db, db_labels, anchors=vector_sets[retrieval.CENTROIDS].vectors)

  def two_stage(vectors, num_lists):
    def search():
      kept = vectors.top(query, num_lists)
      return index.search(query, k, two_stage=True, num_lists=num_lists,
                          kept=kept) + (kept,)
    return search

  searches = {("exact", None): lambda: index.search(query, k)}
  for name, vectors in vector_sets.items():
    for num_lists in lists:
      if num_lists <= num_classes:
        searches[(name, num_lists)] = two_stage(vectors, num_lists)
  results = {key: jax.block_until_ready(fn()) for key, fn in searches.items()}
  times = {key: [] for key in searches}
  for _ in range(repeats):
    for key, fn in searches.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[key].append(time.perf_counter() - start)

  records = []
  exact_seconds = statistics.median(times[("exact", None)])
  for (name, num_lists), found in results.items():
    metrics = retrieval.evaluate_ranking(found[1], query_labels, db_labels,
                                         ks=(k,))
    seconds = statistics.median(times[(name, num_lists)])
    record = {"search": "exact" if num_lists is None else "two_stage",
              "class_vectors": None if num_lists is None else name,
              "lists": num_lists, "seconds": seconds,
              "queries_per_second": len(query) / seconds,
              "speed_up": exact_seconds / seconds,
              f"map@{k}": metrics[f"map@{k}"],
              f"precision@{k}": metrics[f"precision@{k}"]}
    if num_lists is None:
      record["distance_share"] = 1.0
    else:  # the final evaluation's cost and stage-1 accuracy
      cost = retrieval.stage_one_cost(num_classes, db_labels, found[2],
                                      query_labels)
      record["distance_share"] = cost["distance_fraction"]
      record["stage_one_accuracy"] = cost["stage_one_accuracy"]
    records.append(record)
  return records


def benchmark_run(workdir: str, *, k: int, lists: Sequence[int],
                  repeats: int, queries: int = 0) -> dict[str, Any]:
  """`compare` on the run's own splits; `queries` > 0: its first that many
  queries only."""
  run = TrainedRun(workdir)
  if run.source.query_split == run.source.database_split:
    raise ValueError(f"{workdir}: queries and database are one split; this"
                     " benchmark needs them apart")
  query, query_labels = run.embed_split(run.split("query"))
  if queries:
    query, query_labels = query[:queries], query_labels[:queries]
  db, db_labels = run.embed_split(run.split("database"))
  records = compare(query, query_labels, db, db_labels,
                    class_vector_sets(run, db, db_labels), k=k, lists=lists,
                    repeats=repeats)
  return {"run": workdir, "loss": run.exp.config.loss.name,
          "geometry": run.exp.geometry, "queries": len(query),
          "database": len(db), "classes": run.source.num_classes,
          "dim": int(db.shape[1]), "k": k, "repeats": repeats,
          "searches": records}


def table(result: dict[str, Any]) -> list[str]:
  k = result["k"]
  lines = [f"{result['run']}: {result['loss']} ({result['geometry']}),"
           f" {result['queries']:,} queries x {result['database']:,}"
           f" x {result['dim']}, {result['classes']} classes, top {k},"
           f" median of {result['repeats']}", "",
           f"| search | stage 1 | lists | queries/s | speed-up | distances |"
           f" mAP@{k} | P@{k} | stage-1 accuracy |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in result["searches"]:
    accuracy = r.get("stage_one_accuracy")
    lines.append(
        f"| {r['search']} | {r['class_vectors'] or '-'} |"
        f" {r['lists'] or '-'} | {r['queries_per_second']:,.0f} |"
        f" {r['speed_up']:.2f}x | {r['distance_share']:.4f} |"
        f" {r[f'map@{k}']:.4f} | {r[f'precision@{k}']:.4f} |"
        f" {'-' if accuracy is None else f'{accuracy:.4f}'} |")
  return lines


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="+", help="work dirs or results/ folders")
  parser.add_argument("--k", type=int, default=100)
  parser.add_argument("--lists", type=int, nargs="+", default=[1, 2, 3])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--queries", type=int, default=0,
                      help="the first N queries only (0: all)")
  parser.add_argument("--json", help="also write the results here")
  args = parser.parse_args(argv)
  device = jax.devices()[0].device_kind
  results = []
  for workdir in args.runs:
    result = benchmark_run(workdir, k=args.k, lists=args.lists,
                           repeats=args.repeats, queries=args.queries)
    print("\n".join(table(result)) + "\n", flush=True)
    results.append(result)
  if args.json:
    files.write_json(args.json, {"jax": jax.__version__, "device": device,
                                 "runs": results})


if __name__ == "__main__":
  main()
