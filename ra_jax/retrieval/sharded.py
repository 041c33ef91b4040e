"""Search over an index split across the devices of every process of a
jax.distributed job (or of one process): each device holds a contiguous
range of whole lists, each process searches its own devices' shards, and
the shards' top k are gathered and merged on every process.

    sharded = ShardedIndex(index)       # every process: the same index,
    distances, ids = sharded.search(queries, k, two_stage=True)
                                        # the same queries, the same result

The source may be an `Index` or a `DiskIndex` (then each process reads
only its shards' rows from the file: a host of a pod holds 1 / P of the
database). Results equal one process's `search` over the whole index: the
same ids and distances; of equal distances the lower storage row first in
exact search. (Exact search picks candidates per shard, so distances equal
within float rounding may come out in another order; two-stage search
breaks exact ties between lists by shard, not by stage 1's rank.)

Stage 1 runs on every process (the anchors are small and replicated);
stage 2 runs only on the shards that own a kept list. Every process must
call `search` with the same queries, as with any collective.
"""

from typing import Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from ra_jax.retrieval import index as index_lib
from ra_jax.retrieval import two_stage as two_stage_lib


def shard_rows(offsets: np.ndarray, num_shards: int,
               whole_lists: bool) -> np.ndarray:
  """(num_shards + 1,) row boundaries: shard s holds rows
  bounds[s]:bounds[s + 1], about N / S each; with `whole_lists`, every cut
  falls on a list boundary (the one nearest its even share), so a list
  lives on one shard."""
  total = int(offsets[-1])
  even = np.arange(num_shards + 1) * total // num_shards
  if not whole_lists:
    return even.astype(np.int64)
  position = np.clip(np.searchsorted(offsets, even), 1, len(offsets) - 1)
  lower, upper = offsets[position - 1], offsets[position]
  cuts = np.where(even - lower <= upper - even, lower, upper)
  cuts[0], cuts[-1] = 0, total
  return np.maximum.accumulate(cuts).astype(np.int64)


class ShardedIndex:
  """This process's shards of `index`, one per device of `devices` that
  belongs to it (default: every device of the job, in process order).

  Args:
    index: an `Index` or `DiskIndex`, the same on every process.
    devices: the devices to shard over, in shard order.
  """

  def __init__(self, index: index_lib.BaseIndex,
               devices: Optional[Sequence[jax.Device]] = None):
    devices = list(jax.devices() if devices is None else devices)
    counts = {len([d for d in devices if d.process_index == p])
              for p in {d.process_index for d in devices}}
    if len(counts) != 1:
      raise ValueError("ShardedIndex: every process needs as many of the"
                       " devices as the others (the gather stacks shards)")
    self.size, self.dim = len(index), index.dim
    self.anchors, self.list_source = index.anchors, index.list_source
    self.num_shards = len(devices)
    whole = index._listed
    self.bounds = shard_rows(index.offsets, self.num_shards, whole)
    self._local = {}  # shard -> Index on its device (None if empty)
    here = jax.process_index()
    for shard, device in enumerate(devices):
      if device.process_index != here:
        continue
      start, stop = int(self.bounds[shard]), int(self.bounds[shard + 1])
      if stop == start:
        self._local[shard] = None
        continue
      offsets = (np.clip(index.offsets - start, 0, stop - start) if whole
                 else np.array([0, stop - start], np.int64))
      self._local[shard] = index_lib.Index.from_rows(
          np.asarray(index.vectors[start:stop], np.float32),
          index.ids[start:stop],
          None if index.labels is None else index.labels[start:stop],
          index.anchors, index.list_source, offsets,
          f"shard {shard} (rows {start}:{stop})", device=device)

  def __len__(self) -> int:
    return self.size

  def search(self, queries, k: int, *, two_stage: bool = False,
             num_lists: int = 1):
    """`Index.search` over the whole index: (distances, ids), each (Q, k),
    on every process."""
    queries = index_lib.check_queries(queries, self.dim,
                                      "ShardedIndex.search")
    index_lib.check_k(k, self.size, "ShardedIndex.search")
    kept = None
    if two_stage:  # once, for every shard
      if self.anchors is None:
        raise ValueError("two-stage search needs anchors in the index")
      two_stage_lib.check_num_lists(num_lists, len(self.anchors))
      kept = np.asarray(two_stage_lib.stage_one(queries, self.anchors,
                                                num_lists))
    found_d = np.full((len(self._local), len(queries), k), np.inf,
                      np.float32)
    found_i = np.full((len(self._local), len(queries), k), -1, np.int64)
    for slot, shard in enumerate(sorted(self._local)):
      local = self._local[shard]
      if local is None:
        continue
      width = min(k, len(local))
      d, i = local.search(queries, width, two_stage=two_stage,
                          num_lists=num_lists, kept=kept)
      found_d[slot, :, :width], found_i[slot, :, :width] = d, i
    if jax.process_count() > 1:
      found_d = multihost_utils.process_allgather(found_d)
      # int64 ids travel as int32 pairs (jax's default is 32-bit)
      found_i = multihost_utils.process_allgather(
          found_i.view(np.int32)).view(np.int64)
    # (shards, Q, k) in shard order -> (Q, shards * k); the stable sort
    # keeps the lower shard (= the lower storage row) first on ties.
    found_d = np.moveaxis(np.asarray(found_d).reshape(-1, len(queries), k),
                          0, 1).reshape(len(queries), -1)
    found_i = np.moveaxis(np.asarray(found_i).reshape(-1, len(queries), k),
                          0, 1).reshape(len(queries), -1)
    best = np.argsort(found_d, axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(found_d, best, axis=1),
            np.take_along_axis(found_i, best, axis=1))
