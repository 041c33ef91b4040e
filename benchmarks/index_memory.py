"""What an Index holds: resident and peak memory of building and searching
one, against the bytes of the database it indexes.

Each size runs in a fresh process (so its peaks are its own), in phases:

- runtime: RSS once jax is up and a small index has been built and
  searched (compiled code, XLA's pools): the part that does not grow with N;
- caller: the caller's database, N x D float32 (N D 4 bytes, "db");
- build: the peak while `Index.build` runs, less the runtime: the caller's
  array plus the index (goal: <= 2.3 db);
- resident: RSS once the caller's array is gone, after an exact search and
  a two-stage search (2 lists), less the runtime (goal: <= 1.3 db);
- search peak: the peak during those searches, less the runtime.

Peaks are the kernel's VmHWM, reset between phases (/proc/self/clear_refs).
Data: C = 1,000 classes around unit-normal means (the anchors), lists by
label, like `faiss_scale.py`.

  python benchmarks/index_memory.py [--sizes 1000000 4000000] [--json out]
"""

import argparse
import json
import os
import platform
import subprocess
import sys

DIM, CLASSES = 128, 1000
GIB = 2**30


def _status(field: str) -> float:
  """A /proc/self/status field in GiB (VmRSS, VmHWM)."""
  for line in open("/proc/self/status"):
    if line.startswith(field + ":"):
      return int(line.split()[1]) * 1024 / GIB
  raise KeyError(field)


def _reset_peak() -> None:
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")


def measure(n: int, queries: int) -> dict:
  """One size, in this process: the phases above, in GiB."""
  import gc
  import numpy as np
  from ra_jax import retrieval

  rng = np.random.default_rng(0)
  means = rng.normal(size=(CLASSES, DIM)).astype(np.float32)
  small = retrieval.Index.build(means[rng.integers(0, CLASSES, 4096)],
                                rng.integers(0, CLASSES, 4096), anchors=means)
  small.search(means[:queries], 100)
  small.search(means[:queries], 100, two_stage=True, num_lists=2)
  del small
  gc.collect()
  runtime = _status("VmRSS")

  labels = rng.integers(0, CLASSES, n)
  db = np.empty((n, DIM), np.float32)
  for start in range(0, n, 1 << 20):
    part = labels[start:start + (1 << 20)]
    db[start:start + len(part)] = means[part] + rng.standard_normal(
        (len(part), DIM), dtype=np.float32)
  query = db[:queries] + 0.1
  db_gib = db.nbytes / GIB
  caller = _status("VmRSS") - runtime
  _reset_peak()
  index = retrieval.Index.build(db, labels, anchors=means)
  build_peak = _status("VmHWM") - runtime
  del db, labels
  gc.collect()
  _reset_peak()
  index.search(query, 100)
  index.search(query, 100, two_stage=True, num_lists=2)
  search_peak = _status("VmHWM") - runtime
  resident = _status("VmRSS") - runtime
  return {"num_items": n, "dim": DIM, "num_classes": CLASSES,
          "db_gib": db_gib, "runtime_gib": runtime, "caller_gib": caller,
          "build_peak_gib": build_peak, "resident_gib": resident,
          "search_peak_gib": search_peak,
          "build_peak_ratio": build_peak / db_gib,
          "resident_ratio": resident / db_gib,
          "search_peak_ratio": search_peak / db_gib}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", type=int, nargs="+",
                      default=[1_000_000, 4_000_000])
  parser.add_argument("--queries", type=int, default=256)
  parser.add_argument("--json", help="write the rows here")
  parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    print(json.dumps(measure(args.one, args.queries)))
    return
  print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()}"
        f" cores; D={DIM}, C={CLASSES}, {args.queries} queries; GiB, less"
        " the runtime; ratios over the database's bytes", flush=True)
  print("| N | db | runtime | build peak | resident | search peak |\n"
        "|---|---|---|---|---|---|")
  rows = []
  for n in args.sizes:
    out = subprocess.run([sys.executable, __file__, "--one", str(n),
                          "--queries", str(args.queries)],
                         capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    rows.append(row)
    print(f"| {n:,} | {row['db_gib']:.2f} | {row['runtime_gib']:.2f} |"
          f" {row['build_peak_gib']:.2f} ({row['build_peak_ratio']:.2f}x) |"
          f" {row['resident_gib']:.2f} ({row['resident_ratio']:.2f}x) |"
          f" {row['search_peak_gib']:.2f} ({row['search_peak_ratio']:.2f}x)"
          " |", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"machine": platform.node(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
