"""Two-stage search at scale: ra_jax against faiss, in one run.

For each database size N (default 1M and 10M) x 128, clustered like learned
embeddings (C = 100 classes around unit-normal class means with noise
`--spread`; the class means serve as the anchors, lists from the labels):

- ra_jax two-stage (`Index.search(two_stage=True, num_lists=L)`),
- faiss IVF with the anchors as centroids and ra_jax's lists
  (`Index.to_faiss()`, nprobe = L),
- faiss IVF with its own k-means centroids (same number of lists, trained
  on 256 points per list, nprobe = L),
- faiss flat (exact; also the ground truth),

each timed as the median of `--repeats` searches of the same queries after
a warm-up search, with queries/s and recall@100 against the exact top 100.
The indexes are built and measured one at a time so that 10M fits in memory.

  python benchmarks/faiss_scale.py [--sizes 1000000 10000000] [--lists 1 2]
"""

import argparse
import datetime
from functools import partial
import gc
import json
import os
import platform
import resource
import sys

import faiss
import jax
import numpy as np

from ra_jax import retrieval
from ra_jax.timing import median_seconds
from ra_jax.retrieval import faiss_interop

DIM, CLASSES, K = 128, 100, 100


def clustered(n, spread, seed, chunk=1_000_000):
  rng = np.random.default_rng(seed)
  means = rng.normal(size=(CLASSES, DIM)).astype(np.float32)
  labels = rng.integers(0, CLASSES, n)
  x = np.empty((n, DIM), np.float32)
  for start in range(0, n, chunk):  # float32 throughout: 10M x 128 = 5 GB
    part = labels[start:start + chunk]
    x[start:start + chunk] = means[part] + spread * rng.standard_normal(
        (len(part), DIM), dtype=np.float32)
  return means, x, labels


def recall(ids, truth):
  return float(np.mean([len(np.intersect1d(a, b)) / K
                        for a, b in zip(ids, truth)]))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", type=int, nargs="+",
                      default=[1_000_000, 10_000_000])
  parser.add_argument("--queries", type=int, default=1000)
  parser.add_argument("--lists", type=int, nargs="+", default=[1, 2])
  parser.add_argument("--spread", type=float, default=1.0)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--json", help="also write the rows here")
  args = parser.parse_args()
  machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()}"
             f" cores, jax {jax.__version__}, faiss {faiss.__version__},"
             f" faiss threads {faiss.omp_get_max_threads()}; {args.queries}"
             f" queries, top-{K}, D={DIM}, C={CLASSES}, spread {args.spread},"
             f" median of {args.repeats}")
  print(f"# {machine}", flush=True)
  print("| N | method | lists | queries/s | recall@100 |\n|---|---|---|---|---|")
  rows, peaks = [], {}
  for n in args.sizes:
    rows += measure(n, args)
    peaks[str(n)] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 1)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"script": "benchmarks/faiss_scale.py " + " ".join(
          sys.argv[1:]), "date": datetime.date.today().isoformat(),
                 "machine": machine, "peak_rss_gib": peaks, "rows": rows},
                f, indent=1)


def measure(n, args):
  means, db, labels = clustered(n + args.queries, args.spread, seed=n)
  queries, labels = db[n:].copy(), labels[:n]
  # The Index keeps its own float32 copy (its only one): from here on it is
  # the database, `index.vectors` a view of it in storage order.
  index = retrieval.Index.build(db[:n], labels, anchors=means)
  del db
  gc.collect()
  db = index.vectors
  rows = []

  flat = faiss.IndexFlatL2(DIM)
  flat.add(db)
  seconds, (_, truth) = median_seconds(partial(flat.search, queries, K), args.repeats)
  truth = index.ids[truth]  # faiss numbers the rows; the Index returns ids
  rows.append(("faiss flat (exact)", "-", seconds, 1.0))
  del flat
  gc.collect()

  for lists in args.lists:
    seconds, (_, ids) = median_seconds(partial(
        index.search, queries, K, two_stage=True, num_lists=lists),
        args.repeats)
    rows.append(("ra_jax two-stage", lists, seconds, recall(ids, truth)))
  ivf = index.to_faiss()
  for lists in args.lists:
    seconds, (_, ids) = median_seconds(partial(
        faiss_interop.search, ivf, queries, K, num_lists=lists), args.repeats)
    rows.append(("faiss IVF, anchors as centroids", lists, seconds,
                 recall(ids, truth)))
  del ivf
  gc.collect()

  quantizer = faiss.IndexFlatL2(DIM)
  kmeans = faiss.IndexIVFFlat(quantizer, DIM, CLASSES)
  sample = np.random.default_rng(1).choice(n, 256 * CLASSES, replace=False)
  kmeans.train(db[np.sort(sample)])
  kmeans.add(db)
  for lists in args.lists:
    kmeans.nprobe = lists
    seconds, (_, found) = median_seconds(partial(kmeans.search, queries, K),
                                         args.repeats)
    ids = np.where(found >= 0, index.ids[found], -1)
    rows.append(("faiss IVF, own k-means centroids", lists, seconds,
                 recall(ids, truth)))
  del kmeans, quantizer
  gc.collect()

  for method, lists, seconds, value in rows:
    print(f"| {n:,} | {method} | {lists} | {args.queries / seconds:,.0f} |"
          f" {value:.4f} |", flush=True)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"# peak RSS so far: {peak:.1f} GiB", flush=True)
  return [{"n": n, "method": method,
           "lists": None if lists == "-" else lists,
           "queries_per_second": round(args.queries / seconds),
           "recall_at_100": round(value, 4)}
          for method, lists, seconds, value in rows]


if __name__ == "__main__":
  main()
