"""Search speed on this machine, in one run.

1. exact_search vs faiss-cpu IndexFlatL2: 50,000 x 128 database, 1,000
   queries, top-100 (queries/s, median of repeats, alternated).
2. two_stage_search vs exact_search at N = 100,000 and 1,000,000, C = 100
   classes, D = 128, 1,000 queries, top-100, 1 list kept, lists from the
   labels; clustered data whose anchors (the class means) classify the
   queries well. Reports queries/s and mAP@100 of both.

  python benchmarks/search_speed.py [--sizes 100000 1000000] [--repeats 5] \
      [--skip_faiss] [--json out.json]
"""

import argparse
import statistics
import time

import jax
import numpy as np

from ra_jax import files
from ra_jax.timing import median_seconds
from ra_jax.retrieval import exact_search
from ra_jax.retrieval import build_lists
from ra_jax.retrieval import evaluate_ranking
from ra_jax.retrieval import two_stage_search


def clustered(rng, n, classes, dim, spread):
  centers = rng.normal(size=(classes, dim)).astype(np.float32)
  labels = rng.integers(0, classes, n)
  x = centers[labels] + spread * rng.normal(size=(n, dim)).astype(np.float32)
  return centers, x, labels


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--sizes", type=int, nargs="+",
                      default=[100_000, 1_000_000])
  parser.add_argument("--queries", type=int, default=1000)
  parser.add_argument("--spread", type=float, default=0.35,
                      help="noise around the class means; larger values make"
                      " stage 1 pick wrong classes for some queries")
  parser.add_argument("--num_lists", type=int, nargs="+", default=[1],
                      help="lists kept in stage 1 (one row each)")
  parser.add_argument("--skip_faiss", action="store_true")
  parser.add_argument("--json", help="also write the results here")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  device = jax.devices()[0].device_kind
  print(f"# jax {jax.__version__}, {device}, {args.queries} queries,"
        f" top-100, D=128, median of {args.repeats}")

  records = []
  if not args.skip_faiss:
    records.append(compare_with_faiss(rng, args))
  for n in args.sizes:
    records += compare_two_stage(rng, args, n)
  if args.json:
    files.write_json(args.json, {"jax": jax.__version__, "device": device,
                                 "queries": args.queries, "k": 100,
                                 "dim": 128, "repeats": args.repeats,
                                 "results": records})


def compare_with_faiss(rng, args):
  """Exact search vs faiss IndexFlatL2, alternated."""
  import faiss
  db = rng.normal(size=(50_000, 128)).astype(np.float32)
  q = rng.normal(size=(args.queries, 128)).astype(np.float32)
  index = faiss.IndexFlatL2(128)
  index.add(db)
  db_dev = jax.device_put(db)
  ours_t, faiss_t = [], []
  jax.block_until_ready(exact_search(q, db_dev, 100))
  index.search(q, 100)
  for _ in range(args.repeats):
    start = time.perf_counter()
    ours_d, ours_i = jax.block_until_ready(exact_search(q, db_dev, 100))
    ours_t.append(time.perf_counter() - start)
    start = time.perf_counter()
    _, faiss_i = index.search(q, 100)
    faiss_t.append(time.perf_counter() - start)
  agree = np.mean(np.asarray(ours_i) == faiss_i)
  ours_qps = args.queries / statistics.median(ours_t)
  faiss_qps = args.queries / statistics.median(faiss_t)
  print(f"| exact 50,000 x 128 | ra_jax {ours_qps:,.0f} q/s | faiss"
        f" IndexFlatL2 {faiss_qps:,.0f} q/s | ratio {ours_qps / faiss_qps:.2f}"
        f" | same indices {agree:.4f} |", flush=True)
  return {"what": "exact vs faiss IndexFlatL2", "database": 50_000,
          "ra_jax_qps": ours_qps, "faiss_qps": faiss_qps,
          "same_indices": float(agree)}


def compare_two_stage(rng, args, n):
  """Two-stage vs exact on clustered data, for each num_lists; one record
  per num_lists."""
  centers, db, db_labels = clustered(rng, n, 100, 128, args.spread)
  q_labels = rng.integers(0, 100, args.queries)
  q = centers[q_labels] + args.spread * rng.normal(size=(args.queries, 128)
                                                   ).astype(np.float32)
  db_dev = jax.device_put(db)
  lists = build_lists(db_dev, db_labels, 100)
  exact_s, _ = median_seconds(lambda: exact_search(q, db_dev, 100),
                              args.repeats)
  _, exact_i = exact_search(q, db_dev, 100)
  exact_map = evaluate_ranking(exact_i, q_labels, db_labels, ks=(100,))[
      "map@100"]
  stage_one = np.mean(np.argmin(((q[:, None] - centers[None])**2).sum(-1), 1)
                      == q_labels)
  records = []
  for num_lists in args.num_lists:
    search = lambda: two_stage_search(q, centers, db_dev, db_labels,
                                      num_lists=num_lists, k=100, lists=lists)
    two_s, _ = median_seconds(search, args.repeats)
    two_map = evaluate_ranking(search()[1], q_labels, db_labels, ks=(100,))[
        "map@100"]
    print(f"| N={n:,}, spread {args.spread}, lists {num_lists} | exact"
          f" {args.queries / exact_s:,.0f} q/s, mAP@100 {100 * exact_map:.2f}"
          f" | two-stage {args.queries / two_s:,.0f} q/s, mAP@100"
          f" {100 * two_map:.2f} | speed-up {exact_s / two_s:.1f}x |"
          f" stage-1 accuracy {stage_one:.3f} |", flush=True)
    records.append({"what": "two-stage vs exact", "database": n,
                    "classes": 100, "spread": args.spread,
                    "num_lists": num_lists,
                    "exact_qps": args.queries / exact_s,
                    "two_stage_qps": args.queries / two_s,
                    "exact_map@100": float(exact_map),
                    "two_stage_map@100": float(two_map),
                    "stage_one_accuracy": float(stage_one)})
  return records


if __name__ == "__main__":
  main()
