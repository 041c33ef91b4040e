"""Full-metric time at the Fashion-MNIST protocol size: 10,000 queries x
60,000 database items, D = 128, 10 classes (clustered random embeddings, so
rankings are neither trivial nor random).

  python benchmarks/metrics_speed.py [--queries 10000] [--database 60000]
  python benchmarks/metrics_speed.py --searches [--queries 2000] [--repeats 3]

--searches: the final evaluation's full rankings (exact search and 12
two-stage searches: 1-3 lists, label and anchor lists, stage 1 by the
anchors and by the centroids), ranked in one pass over the queries (each
block's distances computed once: `metrics.rankings_per_query`, what
`evaluate_searches` does) against each in a pass of its own
(`metrics.retrieval_per_query` per search), back to back in one process;
medians of --repeats.
"""

import argparse
import resource
import statistics
import time

import numpy as np

from ra_jax import retrieval
from ra_jax.retrieval import evaluate_retrieval, metrics, ranking


def _data(queries: int, database: int, dim: int):
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(10, dim)).astype(np.float32)
  db_labels = rng.integers(0, 10, database)
  q_labels = rng.integers(0, 10, queries)
  db = centers[db_labels] + 1.5 * rng.normal(size=(database, dim)
                                             ).astype(np.float32)
  q = centers[q_labels] + 1.5 * rng.normal(size=(queries, dim)
                                           ).astype(np.float32)
  return centers, q, q_labels, db, db_labels


def _orderings(centers, q, db, db_labels) -> list[ranking.Ordering]:
  """Exact, then the two-stage searches of the study's final evaluation."""
  out = [ranking.Ordering()]
  for vectors in (retrieval.ClassVectors(centers),
                  retrieval.centroids(db, db_labels, 10)):
    for source in ("labels", "anchors"):
      db_lists = db_labels if source == "labels" else vectors.top(db, 1)[:, 0]
      for lists in (1, 2, 3):
        out.append(ranking.Ordering((db_lists, vectors.top(q, lists))))
  return out


def searches(args) -> None:
  centers, q, q_labels, db, db_labels = _data(args.queries, args.database,
                                              args.dim)
  orderings = _orderings(centers, q, db, db_labels)
  metrics.rankings_per_query(q[:8], q_labels[:8], db, db_labels,
                             [ranking.Ordering()])  # compiles the distances
  one, own = [], []
  for _ in range(args.repeats):
    start = time.perf_counter()
    together = metrics.rankings_per_query(q, q_labels, db, db_labels,
                                          orderings)
    one.append(time.perf_counter() - start)
    start = time.perf_counter()
    alone = [metrics.retrieval_per_query(
        q, q_labels, db, db_labels, kept_lists=o.kept_lists)
             for o in orderings]
    own.append(time.perf_counter() - start)
  for a, b in zip(together, alone):  # the same numbers either way
    np.testing.assert_array_equal(a["map"], b["map"])
  one_s, own_s = statistics.median(one), statistics.median(own)
  print(f"{len(orderings)} full rankings of {args.queries} x"
        f" {args.database} (D={args.dim}), median of {args.repeats}:"
        f" one pass {one_s:.1f} s, a pass each {own_s:.1f} s"
        f" ({own_s / one_s:.2f}x)")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--queries", type=int, default=10000)
  parser.add_argument("--database", type=int, default=60000)
  parser.add_argument("--dim", type=int, default=128)
  parser.add_argument("--chunk_size", type=int, default=256)
  parser.add_argument("--searches", action="store_true")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  if args.searches:
    return searches(args)
  _, q, q_labels, db, db_labels = _data(args.queries, args.database,
                                        args.dim)
  start = time.perf_counter()
  result = evaluate_retrieval(q, q_labels, db, db_labels,
                              chunk_size=args.chunk_size)
  seconds = time.perf_counter() - start
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"{args.queries} x {args.database} (D={args.dim}):"
        f" {seconds:.1f} s, peak RSS {peak:.0f} MiB, map {result['map']:.4f},"
        f" precision@10 {result['precision@10']:.4f}")


if __name__ == "__main__":
  main()
