"""An Index: database embeddings with labels, ids and class anchors, searched
exactly or in two stages, saved to and loaded from a plain `.npz` (no pickle)
with a schema check."""

import dataclasses
import zipfile
from typing import Literal, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ra_jax import files
from ra_jax.distances import nearest
from ra_jax.retrieval import exact as exact_lib
from ra_jax.retrieval import two_stage as two_stage_lib

FORMAT = "ra_jax.Index"
VERSION = 1
ListSource = Literal["labels", "anchors"]


@dataclasses.dataclass
class Index:
  """Database of N embeddings (N, D) with ids (N,), optional labels (N,) and
  anchors (C, D).

  Two-stage search needs anchors; its lists come from the labels
  (`list_source="labels"`) or from each item's nearest anchor
  (`"anchors"`, for unlabelled databases).
  """
  embeddings: np.ndarray
  ids: np.ndarray
  labels: Optional[np.ndarray] = None
  anchors: Optional[np.ndarray] = None
  list_source: ListSource = "labels"
  _lists: Optional[two_stage_lib.Lists] = dataclasses.field(default=None,
                                                         repr=False)
  # The embeddings on the device, made once: passing the NumPy array to
  # every search would copy the whole database to the device each time.
  _device: Optional[jax.Array] = dataclasses.field(default=None, repr=False)

  def __post_init__(self):
    self._normalise("Index")

  def _normalise(self, where: str) -> None:
    """float32 vectors and int64 ids/labels (given as integers, never
    rounded from floats), then `_validate`."""
    self.embeddings = _floats(where, "embeddings", self.embeddings)
    self.ids = _integers(where, "ids", self.ids)
    if self.labels is not None:
      self.labels = _integers(where, "labels", self.labels)
    if self.anchors is not None:
      self.anchors = _floats(where, "anchors", self.anchors)
    _validate(self, where=where)

  @classmethod
  def build(cls, embeddings, labels=None, *, anchors=None, ids=None,
            list_source: ListSource = "labels") -> "Index":
    """An index over `embeddings` (ids default to 0..N-1)."""
    n = len(embeddings)
    return cls(embeddings=embeddings,
               ids=np.arange(n) if ids is None else ids, labels=labels,
               anchors=anchors, list_source=list_source)

  def __len__(self) -> int:
    return len(self.ids)

  def add(self, embeddings, labels=None, ids=None) -> None:
    """Appends items (ids default to continuing after the largest id).
    Nothing changes when the new items are invalid."""
    embeddings = _floats("Index.add", "embeddings", embeddings)
    if embeddings.ndim != 2 or embeddings.shape[1] != self.embeddings.shape[1]:
      raise ValueError(f"Index.add: embeddings must be (n,"
                       f" {self.embeddings.shape[1]}), got {embeddings.shape}")
    if ids is None:
      start = int(self.ids.max()) + 1 if len(self.ids) else 0
      ids = np.arange(start, start + len(embeddings))
    if (labels is None) != (self.labels is None):
      raise ValueError("Index.add: give labels exactly when the index has"
                       " labels")
    new = Index.__new__(Index)
    new.embeddings, new.ids, new.labels = embeddings, ids, labels
    new.anchors, new.list_source, new._lists, new._device = (
        self.anchors, self.list_source, None, None)
    new._normalise("Index.add")
    merged = Index(
        embeddings=np.concatenate([self.embeddings, new.embeddings]),
        ids=np.concatenate([self.ids, new.ids]),
        labels=None if labels is None else np.concatenate(
            [self.labels, new.labels]),
        anchors=self.anchors, list_source=self.list_source)
    self.embeddings, self.ids, self.labels = (merged.embeddings, merged.ids,
                                              merged.labels)
    self._lists = self._device = None

  def db_lists(self) -> np.ndarray:
    """Each item's list id for two-stage search, (N,)."""
    if self.list_source == "labels":
      if self.labels is None:
        raise ValueError("list_source='labels' needs labels; use 'anchors'"
                         " for an unlabelled index")
      return self.labels
    return np.asarray(nearest(self.embeddings, self.anchors, 1)[1][:, 0])

  def stage_one(self, queries, num_lists: int) -> np.ndarray:
    """Two-stage search's stage 1: the `num_lists` lists nearest each query
    (Q, num_lists), to pass to `search(kept=...)`."""
    if self.anchors is None:
      raise ValueError("two-stage search needs anchors in the index")
    two_stage_lib.check_num_lists(num_lists, len(self.anchors))
    queries = self._queries(queries)
    return np.asarray(two_stage_lib.stage_one(queries, self.anchors,
                                              num_lists))

  def _queries(self, queries) -> np.ndarray:
    queries = _floats("Index.search", "queries", queries)
    if queries.ndim != 2 or queries.shape[1] != self.embeddings.shape[1]:
      raise ValueError(f"Index.search: queries must be (Q,"
                       f" {self.embeddings.shape[1]}), got {queries.shape}")
    return queries

  def search(self, queries, k: int, *, two_stage: bool = False,
             num_lists: int = 1, kept: Optional[np.ndarray] = None):
    """(distances, ids), each (Q, k), nearest first; id -1 = no result.
    Two-stage search returns only the kept lists' items; `kept`: its stage
    1 already made (`stage_one`)."""
    queries = self._queries(queries)
    if not 1 <= k <= len(self):
      raise ValueError(f"Index.search: k must be in [1, {len(self)}] (the"
                       f" index's size), got {k}")
    if self._device is None:
      self._device = jnp.asarray(self.embeddings)
    if two_stage:
      if self.anchors is None:
        raise ValueError("two-stage search needs anchors in the index")
      if self._lists is None:
        self._lists = two_stage_lib.build_lists(
            self._device, self.db_lists(), len(self.anchors))
      distances, index = two_stage_lib.two_stage_search(
          queries, self.anchors, self._device, None, num_lists=num_lists,
          k=k, lists=self._lists, kept=kept)
    else:
      distances, index = exact_lib.exact_search(queries, self._device, k)
    index = np.asarray(index)
    return np.asarray(distances), np.where(index >= 0, self.ids[index], -1)

  def to_faiss(self, *, exact: bool = False):
    """This index as a faiss index (needs faiss): an IndexIVFFlat over the
    anchors and these lists, equal to two-stage search with nprobe =
    num_lists, or (exact=True) a flat one. See `retrieval.faiss_interop`."""
    from ra_jax.retrieval import faiss_interop
    return faiss_interop.to_faiss(self, exact=exact)

  def save(self, path: str) -> None:
    """Writes `path` (.npz) atomically: a failed save leaves any previous
    file intact."""
    arrays = {"format": np.array(FORMAT), "version": np.array(VERSION),
              "embeddings": self.embeddings, "ids": self.ids,
              "list_source": np.array(self.list_source)}
    if self.labels is not None:
      arrays["labels"] = self.labels
    if self.anchors is not None:
      arrays["anchors"] = self.anchors
    with files.atomic_write(path, "wb") as f:
      np.savez(f, **arrays)

  @classmethod
  def load(cls, path: str) -> "Index":
    """Reads an index saved by `save`; errors name the file and the field."""
    try:
      with files.open_file(path, "rb") as raw, np.load(
          raw, allow_pickle=False) as f:
        arrays = {name: f[name] for name in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
      raise ValueError(f"{path}: not a readable ra_jax index ({e})") from e
    for field in ("format", "version", "embeddings", "ids", "list_source"):
      if field not in arrays:
        raise ValueError(f"{path}: missing field {field!r}")
    if str(arrays["format"]) != FORMAT:
      raise ValueError(f"{path}: format {str(arrays['format'])!r}, expected"
                       f" {FORMAT!r}")
    if int(arrays["version"]) != VERSION:
      raise ValueError(f"{path}: index version {int(arrays['version'])}; this"
                       f" ra_jax reads version {VERSION}")
    index = cls.__new__(cls)
    index.embeddings = arrays["embeddings"]
    index.ids = arrays["ids"]
    index.labels = arrays.get("labels")
    index.anchors = arrays.get("anchors")
    index.list_source = str(arrays["list_source"])
    index._lists = None
    for name, want in (("embeddings", np.float32), ("ids", np.int64),
                       ("labels", np.int64), ("anchors", np.float32)):
      value = getattr(index, name)
      if value is not None and value.dtype != want:
        raise ValueError(f"{path}: field {name!r} must be {np.dtype(want)},"
                         f" got {value.dtype}")
    _validate(index, where=path)
    return index


def _floats(where: str, name: str, values) -> np.ndarray:
  values = np.asarray(values)
  if values.dtype.kind not in "fiu":
    raise ValueError(f"{where}: {name} must be numbers, got dtype"
                     f" {values.dtype}")
  return values.astype(np.float32)


def _integers(where: str, name: str, values) -> np.ndarray:
  """int64 from integers only: a float id or label is an error, never
  rounded (1.5 would silently become 1)."""
  values = np.asarray(values)
  if values.dtype.kind not in "iu" and values.size:
    raise ValueError(f"{where}: {name} must be integers, got dtype"
                     f" {values.dtype}")
  return values.astype(np.int64)


def _validate(index: Index, where: str) -> None:
  """Shape, dtype and consistency checks; errors name `where` and the field."""
  e = index.embeddings
  if e.ndim != 2 or e.dtype != np.float32:
    raise ValueError(f"{where}: embeddings must be float32 (N, D), got"
                     f" {e.dtype} {e.shape}")
  if index.ids.shape != (len(e),) or index.ids.dtype != np.int64:
    raise ValueError(f"{where}: ids must be int64 ({len(e)},), got"
                     f" {index.ids.dtype} {index.ids.shape}")
  if len(np.unique(index.ids)) != len(index.ids):
    raise ValueError(f"{where}: ids are not unique")
  if not np.all(np.isfinite(e)):
    raise ValueError(f"{where}: embeddings hold NaN or inf in"
                     f" {int(np.sum(~np.all(np.isfinite(e), axis=1)))} row(s)")
  if index.labels is not None and index.labels.shape != (len(e),):
    raise ValueError(f"{where}: labels must have shape ({len(e)},), got"
                     f" {index.labels.shape}")
  if index.labels is not None and len(index.labels) and (
      index.labels.min() < 0):
    raise ValueError(f"{where}: labels must be class ids >= 0, got"
                     f" {index.labels.min()}")
  if index.anchors is not None and (index.anchors.ndim != 2 or
                                    index.anchors.shape[1] != e.shape[1] or
                                    not len(index.anchors)):
    raise ValueError(f"{where}: anchors must be (C, {e.shape[1]}) with C >="
                     f" 1, got {index.anchors.shape}")
  if index.anchors is not None and not np.all(np.isfinite(index.anchors)):
    raise ValueError(f"{where}: anchors hold NaN or inf")
  if index.list_source not in ("labels", "anchors"):
    raise ValueError(f"{where}: list_source must be 'labels' or 'anchors',"
                     f" got {index.list_source!r}")
  if index.list_source == "anchors" and index.anchors is None:
    raise ValueError(f"{where}: list_source='anchors' needs anchors")
  if (index.labels is not None and index.anchors is not None and
      len(index.labels) and index.labels.max() >= len(index.anchors)):
    raise ValueError(f"{where}: labels go up to {index.labels.max()} but there"
                     f" are {len(index.anchors)} anchors")
