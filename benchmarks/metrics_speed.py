"""Full-metric time at the Fashion-MNIST protocol size: 10,000 queries x
60,000 database items, D = 128, 10 classes (clustered random embeddings, so
rankings are neither trivial nor random).

  python benchmarks/metrics_speed.py [--queries 10000] [--database 60000]
"""

import argparse
import resource
import time

import numpy as np

from ra_jax.retrieval import evaluate_retrieval


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--queries", type=int, default=10000)
  parser.add_argument("--database", type=int, default=60000)
  parser.add_argument("--dim", type=int, default=128)
  parser.add_argument("--chunk_size", type=int, default=256)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(10, args.dim)).astype(np.float32)
  db_labels = rng.integers(0, 10, args.database)
  q_labels = rng.integers(0, 10, args.queries)
  db = centers[db_labels] + 1.5 * rng.normal(size=(args.database, args.dim)
                                             ).astype(np.float32)
  q = centers[q_labels] + 1.5 * rng.normal(size=(args.queries, args.dim)
                                           ).astype(np.float32)
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
