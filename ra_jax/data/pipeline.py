"""grain pipelines: host-count-independent sharding, seeded per-epoch shuffling,
augmentation, batching, class-balanced batches, padded evaluation batches and
few-shot subsets.

Training batches are {"image": float32 (b, S, S, C), "label": int32 (b,)};
evaluation batches add "mask" (b,) bool and "index" (b,) int64 (the example's
index in its split, -1 for padding). b is the per-host batch size. The
iterators `batches(ds)` gives have `get_state()` / `set_state()`, which the
trainer checkpoints so a resumed run continues the same order.
"""

import functools
import math
import os
import sys
from typing import Optional

import grain
import numpy as np

from ra_jax.data import augment as augment_lib
from ra_jax.data.source import RandomAccessSplit

_AUGMENT_SEED_OFFSET = 0x5EED  # keeps augmentation draws apart from shuffling
DEFAULT_PREFETCH_BATCHES = 4


def batches(ds: grain.MapDataset,
            prefetch_batches: int = DEFAULT_PREFETCH_BATCHES
            ) -> grain.DatasetIterator:
  """An iterator over the batches of `ds` (from `train_dataset` or
  `eval_dataset`) that prepares at most `prefetch_batches` of them ahead, in
  as many threads (no more than the host has cores); 0 prepares each batch
  when it is asked for.

  `iter(ds)` would use grain's defaults, 16 threads and 500 elements ahead:
  here an element is a whole batch, so that is up to 500 batches in memory
  (tens of GB at 224 px) and, for a short run, thousands of images augmented
  for nothing while the threads compete with compilation for the cores.
  """
  if prefetch_batches < 0:
    raise ValueError(f"prefetch_batches must be >= 0, got {prefetch_batches}")
  threads = min(prefetch_batches, os.cpu_count() or 1)
  options = grain.ReadOptions(num_threads=threads,
                              prefetch_buffer_size=prefetch_batches)
  return iter(ds.to_iter_dataset(options))


def _process(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax
    process_index = jax.process_index() if process_index is None else (
        process_index)
    process_count = jax.process_count() if process_count is None else (
        process_count)
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in"
                     f" [0, {process_count})")
  return process_index, process_count


class BalancedIndices:
  """Indices forming batches of `images_per_class` images from each of
  batch_size / images_per_class classes, drawn afresh for every batch from
  (seed, batch number): random access, so grain can checkpoint it.

  Classes with fewer images than `images_per_class` are sampled with
  replacement; pair and triplet losses need >= 2 images of a class per batch.
  """

  def __init__(self, labels: np.ndarray, batch_size: int,
               images_per_class: int, seed: int, num_batches: int):
    if batch_size % images_per_class:
      raise ValueError(f"batch size {batch_size} is not a multiple of"
                       f" images_per_class {images_per_class}")
    self.by_class = [np.flatnonzero(labels == c)
                     for c in range(int(labels.max()) + 1)]
    self.classes = np.asarray([c for c, idx in enumerate(self.by_class)
                               if len(idx)])
    self.per_batch = batch_size // images_per_class
    if self.per_batch > len(self.classes):
      raise ValueError(f"a batch of {batch_size} with {images_per_class} per"
                       f" class needs {self.per_batch} classes; the data has"
                       f" {len(self.classes)}")
    self.batch_size, self.m = batch_size, images_per_class
    self.seed, self.num_batches = seed, num_batches

  def __len__(self) -> int:
    return self.num_batches * self.batch_size

  @functools.lru_cache(maxsize=4)
  def batch(self, number: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, number])
    chosen = rng.choice(self.classes, self.per_batch, replace=False)
    return np.concatenate([
        rng.choice(self.by_class[c], self.m,
                   replace=len(self.by_class[c]) < self.m) for c in chosen])

  def __getitem__(self, index: int) -> int:
    return int(self.batch(index // self.batch_size)[index % self.batch_size])


def train_dataset(split: RandomAccessSplit,
                  augment: augment_lib.AugmentConfig, *,
                  global_batch_size: int, seed: int,
                  num_epochs: Optional[int] = None,
                  images_per_class: Optional[int] = None,
                  labels: Optional[np.ndarray] = None,
                  process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> grain.MapDataset:
  """This host's rows of each global training batch, reshuffled every epoch.

  Every host walks the same seeded sequence of global batches and loads and
  augments only its own `global_batch_size // process_count` consecutive rows
  of each (host p gets rows [p*b, (p+1)*b)). The global batches therefore
  depend on the seed and the global batch size only, not on the number of
  hosts: a run gives the same trajectory on 1 or N hosts and can resume on a
  different slice.

  Args:
    split: the training records.
    augment: the dataset's AugmentConfig (see `augment.preset`).
    global_batch_size: rows of one global batch, divisible by process_count.
    seed: shuffling and augmentation seed; the same seed gives the same
      batches on every run.
    num_epochs: passes over the split; None repeats forever.
    images_per_class: class-balanced global batches of this many images per
      class (needs `labels`, the split's labels (N,)).
    process_index, process_count: this host (default: from jax).

  Returns:
    A dataset of {"image": (b, S, S, C) float32, "label": (b,) int32} with
    b = global_batch_size // process_count.
  """
  pi, pc = _process(process_index, process_count)
  if global_batch_size % pc:
    raise ValueError(f"global_batch_size {global_batch_size} is not divisible"
                     f" by the {pc} processes")
  records = grain.MapDataset.source(split)
  if images_per_class is not None:
    if labels is None:
      raise ValueError("images_per_class needs the split's labels")
    epoch_batches = max(1, len(records) // global_batch_size)
    total = epoch_batches * (num_epochs if num_epochs else sys.maxsize //
                             (global_batch_size * epoch_batches * 2))
    order = grain.MapDataset.source(BalancedIndices(
        np.asarray(labels), global_batch_size, images_per_class, seed, total))
    ds = order.map(lambda i: records[i])
  else:
    ds = records.shuffle(seed=seed).repeat(num_epochs)
    if num_epochs is not None:  # whole global batches only
      ds = ds[:len(ds) // global_batch_size * global_batch_size]

  def prepare(record, rng):
    return {"image": augment_lib.train_transform(record["image"], augment,
                                                 rng),
            "label": np.int32(record["label"])}

  # Augmentation draws are keyed by the position in the global sequence, and
  # both maps are lazy: a host only loads and augments its own rows.
  ds = ds.random_map(prepare, seed=seed + _AUGMENT_SEED_OFFSET)
  return ds.batch(global_batch_size // pc, drop_remainder=True)[pi::pc]


def eval_dataset(split: RandomAccessSplit, augment: augment_lib.AugmentConfig,
                 *, batch_size: int, process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> grain.MapDataset:
  """Every example of this host's shard exactly once, in order, in batches;
  the last batch is padded and `mask` marks the real examples. All hosts get
  the same number of batches, so multi-host evaluation steps stay in lock
  step."""
  pi, pc = _process(process_index, process_count)
  num_batches = math.ceil(math.ceil(len(split) / pc) / batch_size)
  indices = np.arange(pi, len(split), pc)
  padded = np.full(num_batches * batch_size, -1, np.int64)
  padded[:len(indices)] = indices
  blank = None

  def load(position):
    nonlocal blank
    index = int(padded[position])
    if index < 0:
      if blank is None:  # same shape as a real example, all zeros
        first = load_record(int(indices[0]) if len(indices) else 0)
        blank = {k: np.zeros_like(v) for k, v in first.items()}
      return dict(blank, index=np.int64(-1), mask=np.bool_(False))
    return dict(load_record(index), index=np.int64(index),
                mask=np.bool_(True))

  def load_record(index):
    record = split[index]
    return {"image": augment_lib.eval_transform(record["image"], augment),
            "label": np.int32(record["label"])}

  return grain.MapDataset.range(len(padded)).map(load).batch(batch_size)
