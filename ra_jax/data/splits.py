"""Which records a run uses: subsets of splits (few-shot, stratified, a
validation hold-out) and splits decoded once into memory.

Everything here is chosen by seeds alone, so every host and every resumed
run selects the same records.
"""

import concurrent.futures
import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from ra_jax import files
from ra_jax.data.source import ArraySplit
from ra_jax.data.source import as_hwc
from ra_jax.data.source import DatasetSource
from ra_jax.data.source import RandomAccessSplit
from ra_jax.data.source import split_labels

# The split a validation hold-out adds to a source (see `with_validation`).
VALIDATION_SPLIT = "validation"
# Decoded splits up to this size are held in memory by `in_memory("auto")`.
IN_MEMORY_LIMIT_BYTES = 4 << 30


class SubsetSplit:
  """The records of `split` at `indices`, as a split of its own."""

  def __init__(self, split: RandomAccessSplit, indices: Sequence[int]):
    self.split, self.indices = split, np.asarray(indices, np.int64)
    if len(self.indices) and (self.indices.min() < 0 or
                              self.indices.max() >= len(split)):
      raise ValueError(f"subset indices from {self.indices.min()} to"
                       f" {self.indices.max()} are outside the split's"
                       f" {len(split)} records")

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int):
    return self.split[int(self.indices[index])]

  @property
  def labels(self) -> np.ndarray:
    """The subset's labels (N,), read from the split's labels when it has
    them (no image is decoded)."""
    return split_labels(self.split)[self.indices]


def few_shot_indices(labels: np.ndarray, shot: int, seed: int) -> np.ndarray:
  """`shot` indices per class, chosen by `seed` alone (identical on every
  host and run), sorted. A class with fewer than `shot` examples is an error."""
  labels = np.asarray(labels)
  chosen = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    if len(members) < shot:
      raise ValueError(f"few-shot: class {c} has {len(members)} examples,"
                       f" fewer than shot={shot}")
    rng = np.random.default_rng([seed, int(c)])
    chosen.append(rng.choice(members, shot, replace=False))
  return np.sort(np.concatenate(chosen))


def evenly_spaced(total: int, count: int) -> np.ndarray:
  """min(count, total) evenly spaced indices of [0, total), first and last
  included: a fixed subset that needs no seed."""
  return np.linspace(0, total - 1, min(count, total), dtype=np.int64)


def stratified_subset(labels: np.ndarray, count: int, seed: int
                      ) -> np.ndarray:
  """`count` indices whose class proportions follow `labels` (largest
  remainders round up), chosen by `seed` alone, sorted."""
  labels = np.asarray(labels)
  if not 0 < count <= len(labels):
    raise ValueError(f"a subset of {count} examples: must be in [1,"
                     f" {len(labels)}] (the split's size)")
  classes, sizes = np.unique(labels, return_counts=True)
  exact = sizes * count / len(labels)
  take = np.floor(exact).astype(np.int64)
  by_remainder = np.argsort(-(exact - take), kind="stable")
  take[by_remainder[:count - take.sum()]] += 1
  chosen = [np.random.default_rng([seed, int(c)]).choice(
      np.flatnonzero(labels == c), n, replace=False)
            for c, n in zip(classes, take)]
  return np.sort(np.concatenate(chosen))


def with_validation(source: DatasetSource, count: int,
                    seed: int = 0) -> DatasetSource:
  """`source` with a stratified hold-out of `count` training examples as a
  "validation" split, which becomes the query split; the rest of the
  training split is both the training data and the database. The test
  split stays in `splits` but no longer takes part: model selection never
  sees it.

  The hold-out depends on (`count`, `seed`) only, not on the training seed,
  so every trial of a search is scored on the same queries.
  """
  if VALIDATION_SPLIT in source.splits:
    raise ValueError(f"dataset {source.name!r} already has a"
                     f" {VALIDATION_SPLIT!r} split; hold-outs are made from"
                     " sources without one")
  train = source.splits[source.train_split]
  labels = split_labels(train)
  held = stratified_subset(labels, count, seed)
  if count >= len(labels):
    raise ValueError(f"a validation hold-out of {count} leaves no training"
                     f" examples of the {len(labels)}")
  rest = np.setdiff1d(np.arange(len(labels)), held)
  splits = dict(source.splits)
  splits[source.train_split] = SubsetSplit(train, rest)
  splits[VALIDATION_SPLIT] = SubsetSplit(train, held)
  return dataclasses.replace(source, splits=splits,
                             query_split=VALIDATION_SPLIT,
                             database_split=source.train_split)


def decoded_bytes(source: DatasetSource) -> int:
  """Bytes of every split's images decoded as uint8; -1 when image sizes
  vary (`source.image_shape` is None)."""
  if source.image_shape is None:
    return -1
  return sum(len(split) for split in source.splits.values()) * int(
      np.prod(source.image_shape))


def in_memory(source: DatasetSource, mode: str = "auto") -> DatasetSource:
  """`source` with every split decoded once into memory (`ArraySplit`s):
  "always", "never", or "auto" (when the decoded images take at most
  IN_MEMORY_LIMIT_BYTES). Decoding then happens once per process instead
  of once per image per epoch, and labels are free to read."""
  if mode not in ("auto", "always", "never"):
    raise ValueError(f"in-memory mode must be auto, always or never, got"
                     f" {mode!r}")
  size = decoded_bytes(source)
  if mode == "never" or (mode == "auto" and not
                         0 <= size <= IN_MEMORY_LIMIT_BYTES):
    return source
  if size < 0:
    raise ValueError(f"dataset {source.name!r} has images of varying sizes;"
                     " it cannot be held in memory as arrays")
  return dataclasses.replace(source, splits={
      name: split if isinstance(split, ArraySplit) else _decode(split)
      for name, split in source.splits.items()})


def _decode(split: RandomAccessSplit) -> ArraySplit:
  """Every record of `split`, read in chunks by a few threads (decoders
  release the GIL)."""
  chunk = 2048
  starts = range(0, len(split), chunk)

  def read(start):
    records = [split[i] for i in range(start, min(start + chunk, len(split)))]
    images = np.stack([as_hwc(r["image"]) for r in records])
    return images, np.asarray([int(r["label"]) for r in records])

  with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    parts = list(pool.map(read, starts))
  if not parts:
    raise ValueError("an empty split cannot be held in memory")
  return ArraySplit(np.concatenate([p[0] for p in parts]),
                    np.concatenate([p[1] for p in parts]))


def save_few_shot_indices(path: str, indices: np.ndarray,
                          meta: dict[str, Any]) -> None:
  """Writes the chosen indices as JSON, atomically. An existing file with
  other indices is an error and is left untouched."""
  payload = {**meta, "indices": [int(i) for i in indices]}
  if files.exists(path):
    existing = files.read_json(path)
    if existing != payload:
      raise ValueError(f"{path} holds another few-shot selection"
                       f" ({existing.get('shot')} shot, seed"
                       f" {existing.get('seed')}); refusing to overwrite it")
    return
  files.write_json(path, payload, indent=None)
