"""The sharded search as a job of several processes: `test_sharded.py`
runs it under launch/local.sh. Every process builds the same indexes (in
memory, without anchors, and from --disk), keeps its devices' shards and
searches; process 0 writes what it found to --out (.npz)."""

import numpy as np
from absl import app, flags

_OUT = flags.DEFINE_string("out", None, "where process 0 writes results")
_DISK = flags.DEFINE_string("disk", None, "a DiskIndex of `data()`")
SEARCHES = {"exact": {}, "lists1": {"two_stage": True, "num_lists": 1},
            "lists3": {"two_stage": True, "num_lists": 3}}


def data(n=3000, classes=12, dim=8):
  """(embeddings, labels, anchors, ids, queries), the same everywhere."""
  rng = np.random.default_rng(7)
  anchors = 4 * rng.normal(size=(classes, dim)).astype(np.float32)
  labels = rng.integers(0, classes, n)
  embeddings = anchors[labels] + rng.normal(size=(n, dim)).astype(np.float32)
  queries = embeddings[:50] + 0.3 * rng.normal(size=(50, dim)).astype(
      np.float32)
  return embeddings, labels, anchors, rng.permutation(10 * n)[:n], queries


def indexes(disk: str):
  """name -> index: labelled lists, no anchors (exact only), on disk."""
  from ra_jax.retrieval import DiskIndex, Index
  embeddings, labels, anchors, ids, _ = data()
  return {"memory": Index.build(embeddings, labels, anchors=anchors,
                                ids=ids),
          "unlisted": Index.build(embeddings, ids=ids),
          "disk": DiskIndex(disk)}


def search_all(make_index, disk: str) -> dict:
  """Every search of every index as flat arrays `name/search/d|i`."""
  queries = data()[-1]
  found = {}
  for name, index in indexes(disk).items():
    searcher = make_index(index)
    for search, kwargs in SEARCHES.items():
      if name == "unlisted" and kwargs:
        continue
      d, i = searcher.search(queries, 10, **kwargs)
      found[f"{name}/{search}/d"], found[f"{name}/{search}/i"] = d, i
  return found


def main(argv):
  del argv
  from ra_jax.training import runtime
  runtime.initialize("auto")
  import jax
  from ra_jax.retrieval.sharded import ShardedIndex
  found = search_all(ShardedIndex, _DISK.value)
  if jax.process_index() == 0:
    np.savez(_OUT.value, processes=jax.process_count(),
             devices=jax.device_count(), **found)


if __name__ == "__main__":
  app.run(main)
