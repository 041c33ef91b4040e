"""An index larger than memory: `Index`'s list-major layout as .npy files in
one directory, built by streaming and searched memory-mapped, exact and in
two stages.

The directory:

  header.json   format, version, N, D, storage dtype, list source, and per
                file its dtype, shape, size and a SHA-256 per 16 MiB block
  vectors.npy   (N, D) float32 or float16: rows sorted by list (stable)
  norms.npy     (N,) float32 ||row||^2 of the stored (rounded) rows
  ids.npy       (N,) int64; labels.npy (N,) int64, when labelled
  offsets.npy   (C + 1,) int64: list c is rows offsets[c]:offsets[c + 1]
  anchors.npy   (C, D) float32, with anchors

Every file but vectors.npy is read whole and checked against the header
when the index opens (a truncated, extended or edited file is refused by
name). vectors.npy is memory-mapped: its size is checked on open and each
16 MiB block against its SHA-256 the first time a search reads it, so no
result ever comes from unchecked bytes (`DiskIndex.verify` checks every
block at once). Resident memory: 20 bytes per item (ids, labels, norms)
plus one search block (256 MB); the rest stays in the file and the page
cache.

Building (`DiskIndexWriter`): `add` appends chunks of embeddings to a
staging file in arrival order and keeps each item's id and list (12-16
bytes per item); `finish` counts the lists, then streams the staging file
once, writing each chunk's rows at their list's place through a memory
map, and moves the finished directory into place. Disk: the staging file
plus the index (twice the vectors' bytes) while building.
"""

import functools
import hashlib
import json
import os
import shutil
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ra_jax import files
from ra_jax.retrieval import exact as exact_lib
from ra_jax.retrieval import index as index_lib
from ra_jax.retrieval import scoring
from ra_jax.retrieval import two_stage as two_stage_lib

FORMAT = "ra_jax.DiskIndex"
VERSION = 1
HEADER = "header.json"
VECTORS = "vectors.npy"
HASH_BLOCK = 16 << 20  # bytes per SHA-256
DTYPES = ("float32", "float16")
_STAGING = "staging.bin"
_CHUNK_BYTES = 64 << 20  # rows moved per step of `finish`
_SEARCH_BLOCK_BYTES = 256 << 20  # rows per step of exact search
_GROUP = 256  # queries scored against one list at a time


class DiskIndexWriter:
  """Builds a `DiskIndex` in `directory` from chunks of embeddings.

      with DiskIndexWriter(path, dim=128, anchors=anchors) as writer:
        for embeddings, labels in chunks:
          writer.add(embeddings, labels)
      index = writer.index  # or DiskIndex(path)

  The items get the same lists and storage order as `Index.build` over
  their concatenation (lists from labels, or from the nearest anchor with
  `list_source="anchors"`). `directory` must not exist: nothing already
  written is replaced. The build happens in `<directory>.partial-<pid>`,
  moved into place only when complete; a failure removes it.

  Args:
    directory: a local path (the index is memory-mapped).
    dim: D, the embeddings' width.
    anchors: (C, D) class anchors, for two-stage search.
    list_source: "labels" or "anchors", as for `Index`.
    dtype: "float32", or "float16" (half the disk and I/O; distances are
      exact for the rounded vectors, recall against float32 measured in
      docs/benchmarks.md).
  """

  def __init__(self, directory: str, dim: int, *, anchors=None,
               list_source: index_lib.ListSource = "labels",
               dtype: str = "float32"):
    if files.is_remote(directory):
      raise ValueError(f"{directory}: an on-disk index must be on a local"
                       f" file system (it is memory-mapped)")
    self.directory = os.path.abspath(directory)
    where = self.directory
    if os.path.exists(self.directory):
      raise FileExistsError(f"{self.directory} already exists; an on-disk"
                            f" index is never written over (choose a new"
                            f" directory)")
    if dtype not in DTYPES:
      raise ValueError(f"{where}: dtype must be one of {DTYPES}, got"
                       f" {dtype!r}")
    if int(dim) < 1:
      raise ValueError(f"{where}: dim must be >= 1, got {dim}")
    self.dim, self.dtype = int(dim), np.dtype(dtype)
    self.anchors = (None if anchors is None else
                    index_lib.floats(where, "anchors", anchors))
    self.list_source = list_source
    index_lib.validate_fields(0, self.dim, np.zeros(0, np.int64), None,
                              self.anchors, list_source, where)
    self.count = 0
    self._labelled: Optional[bool] = None
    self._ids, self._labels, self._lists = [], [], []
    self._partial = f"{self.directory}.partial-{os.getpid()}"
    os.makedirs(self._partial)
    self._staging = open(os.path.join(self._partial, _STAGING), "wb")
    self.index: Optional[DiskIndex] = None

  def __enter__(self) -> "DiskIndexWriter":
    return self

  def __exit__(self, kind, value, traceback) -> None:
    if kind is not None:
      self.abort()
    elif self.index is None:
      self.finish()

  def add(self, embeddings, labels=None, ids=None) -> None:
    """Appends (n, D) embeddings with their labels (n,) and ids (n,) (ids
    default to the items' positions, 0..N-1 over all chunks). Give labels
    with every chunk or with none. A bad chunk is refused whole, naming
    the field; the items added before it stay."""
    where = f"{self.directory}: add"
    if self._staging.closed:
      raise ValueError(f"{where}: the writer is finished or aborted")
    embeddings = index_lib.floats(where, "embeddings", embeddings)
    if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
      raise ValueError(f"{where}: embeddings must be (n, {self.dim}), got"
                       f" {embeddings.shape}")
    n = len(embeddings)
    ids = index_lib.integers(where, "ids", np.arange(
        self.count, self.count + n) if ids is None else ids)
    labels = (None if labels is None else
              index_lib.integers(where, "labels", labels))
    if self._labelled is not None and self._labelled != (labels is not None):
      raise ValueError(f"{where}: give labels with every chunk or with none")
    index_lib.validate(embeddings, ids, labels, self.anchors,
                       self.list_source, where)
    with np.errstate(over="ignore"):  # float16 overflow: refused below
      rows = np.ascontiguousarray(embeddings, self.dtype)
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
      beyond = " (beyond float16's range, 65504)" if np.all(np.isfinite(
          embeddings[bad])) else ""
      raise ValueError(f"{where}: embeddings hold NaN or inf{beyond} in"
                       f" {int(bad.sum())} row(s), the first row"
                       f" {int(np.argmax(bad))} of this chunk")
    if index_lib.has_lists(self.anchors, labels, self.list_source):
      lists = index_lib.list_ids(embeddings, labels, self.anchors,
                                 self.list_source)
    else:
      lists = np.zeros(n, np.int64)
    self._staging.write(rows.data)
    self._labelled = labels is not None
    self._ids.append(ids)
    self._lists.append(np.asarray(lists, np.int32))  # C < 2^31
    if labels is not None:
      self._labels.append(labels)
    self.count += n

  def finish(self) -> "DiskIndex":
    """Sorts the items into their lists, writes the index and opens it."""
    if self.index is not None:
      return self.index
    if self._staging.closed:
      raise ValueError(f"{self.directory}: the writer was aborted")
    self._staging.close()
    try:
      self._write()
      if os.path.exists(self.directory):
        raise FileExistsError(f"{self.directory} appeared while the index"
                              f" was built; the new index is discarded")
      os.rename(self._partial, self.directory)
    except BaseException:
      self.abort()
      raise
    self.index = DiskIndex(self.directory)
    return self.index

  def abort(self) -> None:
    """Stops the build and removes what it wrote (the directory was never
    created)."""
    self._staging.close()
    shutil.rmtree(self._partial, ignore_errors=True)

  def _write(self) -> None:
    n, where = self.count, self.directory
    if not n:
      raise ValueError(f"{where}: no items were added")
    ids = np.concatenate(self._ids)
    labels = np.concatenate(self._labels) if self._labelled else None
    lists = np.concatenate(self._lists)
    self._ids = self._labels = self._lists = []
    index_lib.check_unique(ids, where)
    place = None  # row of each item in storage order; None = as added
    if index_lib.has_lists(self.anchors, labels, self.list_source):
      order, offsets = two_stage_lib.list_order(lists, len(self.anchors))
      place = np.empty(n, np.int64)
      place[order] = np.arange(n)
      ids = ids[order]
      labels = None if labels is None else labels[order]
      del order
    else:
      offsets = np.array([0, n], np.int64)
    del lists
    path = functools.partial(os.path.join, self._partial)
    vectors = np.lib.format.open_memmap(path(VECTORS), mode="w+",
                                        dtype=self.dtype,
                                        shape=(n, self.dim))
    norms = np.empty(n, np.float32)
    step = max(1, _CHUNK_BYTES // (self.dim * self.dtype.itemsize))
    with open(path(_STAGING), "rb") as staging:
      for start in range(0, n, step):
        stop = min(n, start + step)
        rows = np.fromfile(staging, self.dtype, (stop - start) * self.dim)
        if len(rows) != (stop - start) * self.dim:
          raise OSError(f"{path(_STAGING)}: the staging file ended early")
        rows = rows.reshape(-1, self.dim)
        target = slice(start, stop) if place is None else place[start:stop]
        vectors[target] = rows
        norms[target] = np.asarray(scoring.row_norms(rows.astype(np.float32)))
    vectors.flush()
    del vectors
    os.remove(path(_STAGING))
    arrays = {"norms": norms, "ids": ids, "offsets": offsets,
              "labels": labels, "anchors": self.anchors}
    for name, value in arrays.items():
      if value is not None:
        np.save(path(f"{name}.npy"), value)
    described = {name: _describe(path(name))
                 for name in sorted(os.listdir(self._partial))}
    files.write_json(path(HEADER), {
        "format": FORMAT, "version": VERSION, "count": n, "dim": self.dim,
        "dtype": self.dtype.name, "list_source": self.list_source,
        "hash_block_bytes": HASH_BLOCK, "files": described})


class DiskIndex(index_lib.BaseIndex):
  """A `DiskIndex` directory opened for search (`DiskIndexWriter` builds
  one): the same search, ids, labels and stage 1 as `Index`, with the rows
  memory-mapped instead of held.

  Exact search streams the file in blocks of 256 MB (one pass serves every
  query given); two-stage search reads only the kept lists' rows. Results
  equal `Index`'s over the same items (float32 storage) up to the order of
  near-ties within float rounding: candidates are picked per block.

  Args:
    directory: what `DiskIndexWriter` wrote.
    verify: check every block of vectors.npy now, not as it is read.
  """

  def __init__(self, directory: str, *, verify: bool = False):
    self.directory = os.path.abspath(directory)
    header = _read_header(self.directory)
    self._block = header["hash_block_bytes"]
    described = header["files"]
    arrays = {}
    for name in ("norms", "ids", "labels", "offsets", "anchors"):
      filename = f"{name}.npy"
      if filename in described:
        path = self._check_file(filename, described)
        _check_blocks(path, described[filename]["sha256"], self._block, 0,
                      described[filename]["bytes"])
        arrays[name] = np.load(path, allow_pickle=False)
    for name in ("norms", "ids", "offsets"):
      if name not in arrays:
        raise ValueError(f"{self.directory}/{HEADER}: lists no {name}.npy")
    count, dim = int(header["count"]), int(header["dim"])
    path = self._check_file(VECTORS, described)
    self._vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    if (self._vectors.shape != (count, dim) or
        self._vectors.dtype.name != header["dtype"]):
      raise ValueError(f"{path}: holds {self._vectors.dtype}"
                       f" {self._vectors.shape}, the header says"
                       f" {header['dtype']} ({count}, {dim})")
    if count >= 2**31:
      raise ValueError(f"{self.directory}: {count} items; search addresses"
                       f" rows with int32 (shard beyond 2^31 items)")
    self.ids, self.labels = arrays["ids"], arrays.get("labels")
    self.anchors, self.list_source = arrays.get("anchors"), header["list_source"]
    self.norms, self._offsets = arrays["norms"], arrays["offsets"]
    for name, value, want in (("ids", self.ids, np.int64),
                              ("norms", self.norms, np.float32),
                              ("labels", self.labels, np.int64),
                              ("offsets", self._offsets, np.int64),
                              ("anchors", self.anchors, np.float32)):
      if value is not None and value.dtype != want:
        raise ValueError(f"{self.directory}/{name}.npy: must be"
                         f" {np.dtype(want)}, got {value.dtype}")
    if self.norms.shape != (count,):
      raise ValueError(f"{self.directory}/norms.npy: must be ({count},),"
                       f" got {self.norms.shape}")
    index_lib.validate_fields(count, dim, self.ids, self.labels,
                              self.anchors, self.list_source, self.directory)
    index_lib.check_layout(self._offsets, count, self.labels, self.anchors,
                           self.list_source, self.directory)
    self._hashes = described[VECTORS]["sha256"]
    self._checked = np.zeros(len(self._hashes), bool)
    self._data_start = self._vectors.offset
    if verify:
      self.verify()

  def _check_file(self, filename: str, described: dict) -> str:
    """The path of `filename`, after checking it has the header's size."""
    path = os.path.join(self.directory, filename)
    if filename not in described:
      raise ValueError(f"{self.directory}/{HEADER}: lists no {filename}")
    if not os.path.exists(path):
      raise ValueError(f"{path}: missing (the index is incomplete)")
    size, want = os.path.getsize(path), described[filename]["bytes"]
    if size != want:
      raise ValueError(f"{path}: {size} bytes, the header says {want}"
                       f" ({'truncated' if size < want else 'extended'})")
    return path

  @property
  def dim(self) -> int:
    return self._vectors.shape[1]

  @property
  def offsets(self) -> np.ndarray:
    return self._offsets

  @property
  def dtype(self) -> np.dtype:
    """The stored rows' dtype (float32 or float16)."""
    return self._vectors.dtype

  @property
  def vectors(self) -> np.ndarray:
    """(N, D) rows in storage order, read-only and memory-mapped (not
    checked against the header: `verify` first if that matters)."""
    return self._vectors

  def verify(self) -> None:
    """Checks every block of vectors.npy against the header now."""
    self._rows(0, len(self))

  def _rows(self, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop), memory-mapped in the stored dtype (float16 is
    widened on the device), each hash block they touch checked against its
    SHA-256 the first time."""
    width = self.dim * self.dtype.itemsize
    first = (self._data_start + start * width) // self._block
    last = (self._data_start + stop * width - 1) // self._block
    todo = [b for b in range(first, last + 1) if not self._checked[b]]
    if todo:
      _check_blocks(os.path.join(self.directory, VECTORS), self._hashes,
                    self._block, todo[0] * self._block,
                    (todo[-1] + 1) * self._block, skip=self._checked)
      self._checked[todo] = True
    return self._vectors[start:stop]

  def _exact_rows(self, queries, k):
    n = len(self)
    step = max(k, _SEARCH_BLOCK_BYTES // (self.dim * 4))  # as float32
    best = (jnp.full((len(queries), k), jnp.inf, jnp.float32),
            jnp.full((len(queries), k), -1, jnp.int32))
    for start in range(0, n, step):
      stop = min(n, start + step)
      # Blocks are read while the previous one is scored: wait for it only
      # after this one is read, so at most two blocks are held.
      rows = jax.device_put(self._rows(start, stop))
      found = exact_lib.exact_search(queries, rows, min(k, stop - start),
                                     norms=self.norms[start:stop])
      best = jax.block_until_ready(best)
      best = _merge(best, found, start, k)
    return best

  def _two_stage_rows(self, queries, k, num_lists, kept):
    chosen = np.asarray(two_stage_lib.stage_one(queries, self.anchors,
                                                num_lists)
                        if kept is None else kept)
    total = len(self)
    found_d = np.full(chosen.shape + (k,), np.inf, np.float32)
    found_r = np.full(chosen.shape + (k,), -1, np.int32)
    previous, pending = [], []  # results of the list before, and this one
    for start, stop, length, who, slots in two_stage_lib.groups_by_list(
        chosen, self._offsets, total):
      # The list as the slice `Index` scores, moved back where it would
      # run past the end; other rows masked.
      first = min(start, total - length)
      block = jax.device_put(self._rows(first, first + length))
      norms = self.norms[first:first + length]
      width = min(k, length)
      for g in range(0, len(who), _GROUP):
        part = slice(g, g + _GROUP)
        group = two_stage_lib.pad_to_bucket(queries[who[part]])
        pending.append((who[part], slots[part], width, first, _list_candidates(
            group, block, norms, start - first, stop - first, length, width)))
      # This list is read while the one before is scored; waiting for that
      # one only now keeps at most two lists' rows in memory.
      for item in previous:
        _place(found_d, found_r, *item)
      previous, pending = pending, []
    for item in previous:
      _place(found_d, found_r, *item)
    flat_d = found_d.reshape(len(chosen), -1)
    best = np.argsort(flat_d, axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(flat_d, best, axis=1),
            np.take_along_axis(found_r.reshape(len(chosen), -1), best, axis=1))


def open_index(path: str) -> index_lib.BaseIndex:
  """The index at `path`: a `DiskIndex` directory, or an `Index` file saved
  by `Index.save` (.npz)."""
  if not files.is_remote(path) and os.path.isdir(path):
    return DiskIndex(path)
  return index_lib.Index.load(path)


def write_index(index: index_lib.BaseIndex, directory: str, *,
                dtype: str = "float32") -> DiskIndex:
  """An `Index` (or `DiskIndex`) copied into a new on-disk index, with the
  same lists, in chunks (never all rows in memory at once)."""
  writer = DiskIndexWriter(directory, index.dim, anchors=index.anchors,
                           list_source=index.list_source, dtype=dtype)
  step = max(1, _CHUNK_BYTES // (4 * index.dim))
  with writer:
    for start in range(0, len(index), step):
      stop = min(len(index), start + step)
      writer.add(np.asarray(index.vectors[start:stop], np.float32),
                 None if index.labels is None else index.labels[start:stop],
                 index.ids[start:stop])
  return writer.index


def _place(found_d, found_r, who, slots, width, first, result) -> None:
  distances, rows = (np.asarray(x)[:len(who)] for x in result)
  found_d[who, slots, :width] = distances
  found_r[who, slots, :width] = np.where(rows >= 0, rows + first, -1)


@functools.partial(jax.jit, static_argnames=("length", "k"))
def _list_candidates(queries, block, norms, start, stop, length, k):
  """(exact distances, rows of `block`) (b, k) of the k nearest rows of
  [start, stop) in `block` (length rows); inf / -1 past the list's end."""
  rows = two_stage_lib.list_top_k(queries, block, norms, start, stop,
                                  length, k)
  return scoring.direct_distances(queries, block, rows), rows


@functools.partial(jax.jit, static_argnames=("k",))
def _merge(best, found, start, k):
  """The k nearest of the running best and a block's (rows offset by
  `start`); of equal distances the lower row (the earlier block) first."""
  distances = jnp.concatenate([best[0], found[0]], axis=1)
  rows = jnp.concatenate([best[1], found[1] + start], axis=1)
  top, pos = scoring.top_k_smallest(distances, k, False)
  return top, jnp.take_along_axis(rows, pos, axis=1)


def _describe(path: str) -> dict:
  """A file's entry in the header: size and a SHA-256 per block, plus the
  dtype and shape of an .npy file."""
  entry = {"bytes": os.path.getsize(path), "sha256": []}
  if path.endswith(".npy"):
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    entry.update(dtype=array.dtype.name, shape=list(array.shape))
    del array
  with open(path, "rb") as f:
    while block := f.read(HASH_BLOCK):
      entry["sha256"].append(hashlib.sha256(block).hexdigest())
  return entry


def _check_blocks(path: str, hashes: list, block: int, start: int,
                  stop: int, *, skip: Optional[np.ndarray] = None) -> None:
  """Checks the `block`-byte hash blocks covering bytes [start, stop) of
  `path` (those not marked in `skip`), naming the file and the bytes that
  differ."""
  with open(path, "rb") as f:
    for b in range(start // block, -(-stop // block)):
      if skip is not None and skip[b]:
        continue
      f.seek(b * block)
      if (b >= len(hashes) or
          hashlib.sha256(f.read(block)).hexdigest() != hashes[b]):
        raise ValueError(
            f"{path}: bytes {b * block}-{(b + 1) * block - 1} do"
            f" not match the SHA-256 in {HEADER} (the file was edited or"
            f" damaged); rebuild the index")


def _read_header(directory: str) -> dict:
  path = os.path.join(directory, HEADER)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{directory}: no such index directory")
  try:
    with open(path) as f:
      header = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: not a readable index header ({e})") from e
  if not isinstance(header, dict) or header.get("format") != FORMAT:
    raise ValueError(f"{path}: format {header.get('format')!r}, expected"
                     f" {FORMAT!r}" if isinstance(header, dict) else
                     f"{path}: not an index header")
  if header.get("version") != VERSION:
    raise ValueError(f"{path}: version {header.get('version')!r}; this"
                     f" ra_jax reads version {VERSION}")
  for field in ("count", "dim", "dtype", "list_source", "files"):
    if field not in header:
      raise ValueError(f"{path}: missing field {field!r}")
  block = header.get("hash_block_bytes")
  if not isinstance(block, int) or block < 1:
    raise ValueError(f"{path}: hash_block_bytes {block!r}, expected a"
                     f" positive integer")
  if header["dtype"] not in DTYPES:
    raise ValueError(f"{path}: dtype {header['dtype']!r}, expected one of"
                     f" {DTYPES}")
  return header
