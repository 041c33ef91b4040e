"""The on-disk index (`retrieval.on_disk`) past memory: build by streaming,
memory, and exact and two-stage search read from the file.

For each storage dtype, in this process:

- build: `DiskIndexWriter` fed chunks of 2^18 synthetic embeddings
  generated on the fly (C = 1,000 classes around unit-normal means, spread
  0.35, like `index_memory.py`; the database is never in memory), timed,
  with the peak of the process's anonymous memory (RssAnon, sampled every
  0.1 s: mapped file pages are the page cache's, not the process's);
- open: a fresh `DiskIndex` and its RssAnon;
- exact search: one pass over the file for `--queries` queries (the file
  is larger than the page cache at 50M float32: read from the disk);
- two-stage search with 1 and 2 lists (a few lists' rows per query);
- with --memory_peer (sizes that fit in memory): the in-memory `Index`
  over the same rows and queries, its queries/s and whether its ids equal
  the disk index's;
- float16 (when both dtypes run): recall@k of its ids against float32's,
  exact and two-stage, on the same queries.

The machine's disk speed bounds exact search; `dd` figures are recorded
beside the results in docs/benchmarks.md.

  python benchmarks/disk_index.py --n 50000000 [--dtypes float32 float16]
      [--dir /tmp/disk_index] [--queries 256] [--json out.json] [--keep]
      [--memory_peer]
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import threading
import time

import numpy as np

DIM, CLASSES, SPREAD, CHUNK, K = 128, 1000, 0.35, 1 << 18, 10
GIB = 2**30


def _rss_anon() -> float:
  for line in open("/proc/self/status"):
    if line.startswith("RssAnon:"):
      return int(line.split()[1]) * 1024 / GIB
  raise KeyError("RssAnon")


class _Peak:
  """The largest RssAnon seen while the block runs."""

  def __enter__(self):
    self.peak, self._stop = _rss_anon(), threading.Event()
    def sample():
      while not self._stop.wait(0.1):
        self.peak = max(self.peak, _rss_anon())
    self._thread = threading.Thread(target=sample, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, _rss_anon())


def _chunks(n: int, means: np.ndarray):
  """(embeddings, labels) chunks of the synthetic database, each from its
  own seed (the same data for every dtype)."""
  for start in range(0, n, CHUNK):
    rng = np.random.default_rng([1, start])
    size = min(CHUNK, n - start)
    labels = rng.integers(0, CLASSES, size)
    noise = rng.standard_normal((size, DIM), dtype=np.float32)
    yield means[labels] + SPREAD * noise, labels


def run(n: int, dtype: str, directory: str, queries: np.ndarray,
        means: np.ndarray, memory_peer: bool) -> tuple[dict, dict]:
  from ra_jax.retrieval import on_disk
  row = {"n": n, "dim": DIM, "classes": CLASSES, "dtype": dtype}
  base = _rss_anon()
  with _Peak() as peak:
    start = time.perf_counter()
    with on_disk.DiskIndexWriter(directory, DIM, anchors=means,
                                 dtype=dtype) as writer:
      for embeddings, labels in _chunks(n, means):
        writer.add(embeddings, labels)
    row["build_s"] = time.perf_counter() - start
  row["build_peak_anon_gib"] = peak.peak - base
  row["file_gib"] = os.path.getsize(
      os.path.join(directory, on_disk.VECTORS)) / GIB
  del writer
  before = _rss_anon()
  index = on_disk.DiskIndex(directory)
  row["open_anon_gib"] = _rss_anon() - before
  found = {}
  searches = {"exact": {}, "two_stage_1": {"two_stage": True, "num_lists": 1},
              "two_stage_2": {"two_stage": True, "num_lists": 2}}
  with _Peak() as peak:
    # First calls compile and meet a cold page cache; repeats are timed too
    # (at 50M float32 the file outgrows the cache: exact search rereads it).
    for name, kwargs in searches.items():
      for attempt in ("first", "repeat"):
        start = time.perf_counter()
        found[name] = index.search(queries, K, **kwargs)[1]
        row[f"{name}_{attempt}_s"] = time.perf_counter() - start
      row[f"{name}_qps"] = len(queries) / row[f"{name}_repeat_s"]
    row["exact_read_gbps"] = (row["file_gib"] * GIB / 1e9 /
                              row["exact_repeat_s"])
  row["search_peak_anon_gib"] = peak.peak - before
  if memory_peer:  # the in-memory Index over the same rows, same queries
    from ra_jax.retrieval import Index
    peer = Index.build(np.asarray(index.vectors, np.float32), index.labels,
                       anchors=means, ids=index.ids)
    for name, kwargs in searches.items():
      peer.search(queries, K, **kwargs)
      start = time.perf_counter()
      same = peer.search(queries, K, **kwargs)[1]
      row[f"{name}_memory_qps"] = len(queries) / (time.perf_counter() - start)
      row[f"{name}_disk_over_memory"] = (row[f"{name}_qps"] /
                                         row[f"{name}_memory_qps"])
      row[f"{name}_same_ids_as_memory"] = bool(np.array_equal(same,
                                                              found[name]))
    del peer
  print(json.dumps(row), flush=True)
  return row, found


def recall(found: np.ndarray, truth: np.ndarray) -> float:
  """Mean over queries of |found ∩ truth| / k."""
  return float(np.mean([len(np.intersect1d(f, t)) / len(t)
                        for f, t in zip(found, truth)]))


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--n", type=int, default=1_000_000)
  parser.add_argument("--dtypes", nargs="+", default=["float32", "float16"])
  parser.add_argument("--dir", default="/tmp/disk_index")
  parser.add_argument("--queries", type=int, default=256)
  parser.add_argument("--json", default=None)
  parser.add_argument("--memory_peer", action="store_true",
                      help="also time the in-memory Index (small n only)")
  parser.add_argument("--keep", action="store_true",
                      help="keep the index directories")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  means = rng.normal(size=(CLASSES, DIM)).astype(np.float32)
  picks = rng.integers(0, CLASSES, args.queries)
  queries = (means[picks] + SPREAD * rng.standard_normal(
      (args.queries, DIM), dtype=np.float32))
  rows, results = [], {}
  for dtype in args.dtypes:
    directory = f"{args.dir}_{args.n}_{dtype}"
    if os.path.exists(directory):
      shutil.rmtree(directory)
    row, results[dtype] = run(args.n, dtype, directory, queries, means,
                              args.memory_peer and dtype == "float32")
    rows.append(row)
    if not args.keep:
      shutil.rmtree(directory)
  if "float32" in results:
    for dtype, row in zip(args.dtypes, rows):
      for name in results[dtype]:
        row[f"{name}_recall_at_{K}_vs_float32"] = recall(
            results[dtype][name], results["float32"][name])
  out = {"benchmark": "disk_index", "date": datetime.date.today().isoformat(),
         "machine": f"{platform.machine()}, {os.cpu_count()} cores,"
                    f" {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GIB:.0f} GiB",
         "queries": args.queries, "k": K, "rows": rows}
  print(json.dumps(out, indent=1))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
