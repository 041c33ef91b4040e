"""An Index: database embeddings with labels, ids and class anchors, searched
exactly or in two stages, saved to and loaded from a plain `.npz` (no pickle)
with a schema check."""

import zipfile
from typing import Literal, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ra_jax import files
from ra_jax.distances import nearest
from ra_jax.retrieval import exact as exact_lib
from ra_jax.retrieval import scoring
from ra_jax.retrieval import two_stage as two_stage_lib

FORMAT = "ra_jax.Index"
VERSION = 2  # 2: rows stored list-major with their offsets; 1: any order
ListSource = Literal["labels", "anchors"]
_NEAREST_CHUNK = 1 << 16  # rows per stage-1 call when lists come from anchors


class BaseIndex:
  """What every index shares: ids and optional labels (N,) and anchors
  (C, D) in storage order, list offsets (C + 1,), stage 1, id lookups and
  the checks of `search`. Subclasses hold the rows (`Index`: on the device;
  `on_disk.DiskIndex`: memory-mapped) and implement `_exact_rows` and
  `_two_stage_rows`, each returning (distances, rows), (Q, k)."""

  ids: np.ndarray
  labels: Optional[np.ndarray]
  anchors: Optional[np.ndarray]
  list_source: str
  _id_order: Optional[np.ndarray] = None

  @property
  def dim(self) -> int:
    raise NotImplementedError

  @property
  def offsets(self) -> np.ndarray:
    """(C + 1,): list c is rows offsets[c]:offsets[c + 1]."""
    raise NotImplementedError

  def _exact_rows(self, queries: np.ndarray, k: int):
    raise NotImplementedError

  def _two_stage_rows(self, queries: np.ndarray, k: int, num_lists: int,
                      kept: Optional[np.ndarray]):
    raise NotImplementedError

  def __len__(self) -> int:
    return len(self.ids)

  def __repr__(self) -> str:
    anchors = "no" if self.anchors is None else len(self.anchors)
    return (f"{type(self).__name__}({len(self)} x {self.dim}, {anchors}"
            f" anchors, lists from {self.list_source})")

  @property
  def _listed(self) -> bool:
    """Whether the items are in lists two-stage search can use."""
    return has_lists(self.anchors, self.labels, self.list_source)

  def _require_lists(self) -> None:
    """A ValueError saying what two-stage search lacks, if anything."""
    if self.anchors is None:
      raise ValueError("two-stage search needs anchors in the index")
    if not self._listed:
      raise ValueError("list_source='labels' needs labels; use 'anchors'"
                       " for an unlabelled index")

  def db_lists(self) -> np.ndarray:
    """Each row's list id for two-stage search, (N,), in storage order."""
    self._require_lists()
    return np.repeat(np.arange(len(self.anchors)), np.diff(self.offsets))

  def to_faiss(self, *, exact: bool = False):
    """This index as a faiss index (needs faiss; it holds every row in
    memory, as float32): an IndexIVFFlat over the anchors and these lists,
    equal to two-stage search with nprobe = num_lists, or (exact=True) a
    flat one. See `retrieval.faiss_interop`."""
    from ra_jax.retrieval import faiss_interop
    return faiss_interop.to_faiss(self, exact=exact)

  def labels_of(self, ids) -> np.ndarray:
    """The labels of `ids` (any shape; -1 for id -1). Needs labels."""
    where = f"{type(self).__name__}.labels_of"
    if self.labels is None:
      raise ValueError(f"{where}: the index has no labels")
    if self._id_order is None:
      self._id_order = np.argsort(self.ids, kind="stable")
    ids = np.asarray(ids)
    pos = np.searchsorted(self.ids, ids, sorter=self._id_order)
    pos = self._id_order[np.minimum(pos, len(self.ids) - 1)]
    unknown = (self.ids[pos] != ids) & (ids != -1)
    if np.any(unknown):
      raise ValueError(f"{where}: id {ids[unknown].flat[0]} is not in the"
                       f" index")
    return np.where(ids == -1, -1, self.labels[pos])

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
    return check_queries(queries, self.dim, f"{type(self).__name__}.search")

  def search(self, queries, k: int, *, two_stage: bool = False,
             num_lists: int = 1, kept: Optional[np.ndarray] = None):
    """(distances, ids), each (Q, k), nearest first; id -1 = no result.
    Two-stage search returns only the kept lists' items; `kept`: its stage
    1 already made (`stage_one`)."""
    queries = self._queries(queries)
    where = f"{type(self).__name__}.search"
    check_k(k, len(self), where)
    if two_stage:
      self._require_lists()
      two_stage_lib.check_num_lists(num_lists, len(self.anchors))
      two_stage_lib.check_kept(kept, len(queries), num_lists,
                               len(self.anchors), where)
      distances, rows = self._two_stage_rows(queries, k, num_lists, kept)
    else:
      distances, rows = self._exact_rows(queries, k)
    rows = np.asarray(rows)
    return (np.asarray(distances),
            np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1))


class Index(BaseIndex):
  """Database of N embeddings (D,) with ids, optional labels and class
  anchors (C, D), searched exactly or in two stages.

  The embeddings are held once, list-major (`two_stage.Lists`): sorted by
  list id (stable), with each list's offsets, so stage 2 reads each kept
  list as one contiguous slice and exact search scans the same rows. On
  CPU that copy is the device array itself (`vectors` is a read-only view
  of it). Resident: N (4 D + 4 + 8 [+ 8 with labels]) bytes plus the
  anchors; building needs the caller's array plus that copy.

  Two-stage search needs anchors; its lists come from the labels
  (`list_source="labels"`) or from each item's nearest anchor
  (`"anchors"`, for unlabelled databases). Rows are in storage order:
  `vectors[i]`, `ids[i]` and `labels[i]` belong together, and a search
  returns ids, never rows.
  """

  def __init__(self, embeddings, labels=None, *, anchors=None, ids=None,
               list_source: ListSource = "labels", where: str = "Index"):
    embeddings = floats(where, "embeddings", embeddings)
    n = len(embeddings) if embeddings.ndim else 0
    ids = integers(where, "ids", np.arange(n) if ids is None else ids)
    labels = None if labels is None else integers(where, "labels", labels)
    anchors = None if anchors is None else floats(where, "anchors", anchors)
    validate(embeddings, ids, labels, anchors, list_source, where)
    check_unique(ids, where)
    self.anchors, self.list_source = anchors, list_source
    if has_lists(anchors, labels, list_source):
      order, offsets = two_stage_lib.list_order(
          list_ids(embeddings, labels, anchors, list_source), len(anchors))
    else:  # one list, the items as given
      order, offsets = None, np.array([0, n], np.int64)
    if order is not None:
      ids = ids[order]
      labels = None if labels is None else labels[order]
    self._set_rows(two_stage_lib.device_rows(embeddings, order), offsets,
                   ids, labels, where)

  def _set_rows(self, vectors: jax.Array, offsets: np.ndarray,
                ids: np.ndarray, labels: Optional[np.ndarray],
                where: str) -> None:
    norms, bad = _norms_and_nonfinite_rows(vectors)
    if int(bad):
      raise ValueError(f"{where}: embeddings hold NaN or inf in {int(bad)}"
                       f" row(s)")
    self._lists = two_stage_lib.Lists(vectors, norms, offsets)
    self.ids, self.labels = ids, labels
    self._id_order = None

  @classmethod
  def build(cls, embeddings, labels=None, *, anchors=None, ids=None,
            list_source: ListSource = "labels") -> "Index":
    """An index over `embeddings` (N, D) (ids default to 0..N-1)."""
    return cls(embeddings, labels, anchors=anchors, ids=ids,
               list_source=list_source)

  @property
  def vectors(self) -> np.ndarray:
    """(N, D) float32 rows in storage order (sorted by list, not the order
    they were given in: row i is the item `ids[i]`). On CPU a read-only
    view of the index's one copy; elsewhere copied from the device."""
    return np.asarray(self._lists.vectors)

  @property
  def dim(self) -> int:
    return self._lists.vectors.shape[1]

  @property
  def offsets(self) -> np.ndarray:
    return self._lists.offsets

  def _exact_rows(self, queries, k):
    return exact_lib.exact_search(queries, self._lists.vectors, k,
                                  norms=self._lists.norms)

  def _two_stage_rows(self, queries, k, num_lists, kept):
    return two_stage_lib.search_lists(queries, self.anchors, self._lists,
                                      num_lists=num_lists, k=k, kept=kept)

  def add(self, embeddings, labels=None, ids=None) -> None:
    """Appends items (ids default to continuing after the largest id) and
    re-sorts (briefly holding the index twice plus the new items). Nothing
    changes when the new items are invalid."""
    embeddings = floats("Index.add", "embeddings", embeddings)
    if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
      raise ValueError(f"Index.add: embeddings must be (n, {self.dim}), got"
                       f" {embeddings.shape}")
    if ids is None:
      start = int(self.ids.max()) + 1 if len(self.ids) else 0
      ids = np.arange(start, start + len(embeddings))
    if (labels is None) != (self.labels is None):
      raise ValueError("Index.add: give labels exactly when the index has"
                       " labels")
    new = Index(embeddings, labels, anchors=self.anchors, ids=ids,
                list_source=self.list_source, where="Index.add")
    merged = Index(
        np.concatenate([self.vectors, new.vectors]),
        None if labels is None else np.concatenate([self.labels,
                                                    new.labels]),
        anchors=self.anchors, ids=np.concatenate([self.ids, new.ids]),
        list_source=self.list_source, where="Index.add")
    self.__dict__.update(merged.__dict__)

  def save(self, path: str) -> None:
    """Writes `path` (.npz, rows in storage order) atomically: a failed save
    leaves any previous file intact."""
    arrays = {"format": np.array(FORMAT), "version": np.array(VERSION),
              "embeddings": self.vectors, "ids": self.ids,
              "offsets": self.offsets,
              "list_source": np.array(self.list_source)}
    if self.labels is not None:
      arrays["labels"] = self.labels
    if self.anchors is not None:
      arrays["anchors"] = self.anchors
    with files.atomic_write(path, "wb") as f:
      np.savez(f, **arrays)

  @classmethod
  def load(cls, path: str) -> "Index":
    """Reads an index saved by `save` (version 1 files, in any order, are
    sorted on load); errors name the file and the field."""
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
    version = int(arrays["version"])
    if version not in (1, VERSION):
      raise ValueError(f"{path}: index version {version}; this ra_jax reads"
                       f" versions 1 and {VERSION}")
    for name, want in (("embeddings", np.float32), ("ids", np.int64),
                       ("labels", np.int64), ("anchors", np.float32),
                       ("offsets", np.int64)):
      value = arrays.get(name)
      if value is not None and value.dtype != want:
        raise ValueError(f"{path}: field {name!r} must be {np.dtype(want)},"
                         f" got {value.dtype}")
    source = str(arrays["list_source"])
    if version == 1:  # rows in the order they were given: sort them now
      return cls(arrays["embeddings"], arrays.get("labels"),
                 anchors=arrays.get("anchors"), ids=arrays["ids"],
                 list_source=source, where=path)
    if "offsets" not in arrays:
      raise ValueError(f"{path}: missing field 'offsets'")
    return cls.from_rows(arrays["embeddings"], arrays["ids"],
                          arrays.get("labels"), arrays.get("anchors"),
                          source, arrays["offsets"], path)

  @classmethod
  def from_rows(cls, embeddings, ids, labels, anchors, list_source,
                 offsets, where: str,
                 device: Optional[jax.Device] = None) -> "Index":
    """An index over rows already in storage order (a saved index, or a
    shard of one on `device`)."""
    validate(embeddings, ids, labels, anchors, list_source, where)
    check_layout(offsets, len(embeddings), labels, anchors, list_source,
                 where)
    check_unique(ids, where)
    index = cls.__new__(cls)
    index.anchors, index.list_source = anchors, list_source
    index._set_rows(two_stage_lib.device_rows(embeddings, device=device),
                    offsets, ids, labels, where)
    return index


@jax.jit
def _norms_and_nonfinite_rows(vectors):
  """(||row||^2 (N,), rows holding NaN or inf). A row's sum of x * 0 is NaN
  exactly when it holds NaN or inf; written so, XLA reduces in one pass
  (`all(isfinite(x))` materialised an (N, D) mask: +0.5 GB at 4M x 128)."""
  bad = jnp.sum(jnp.isnan(jnp.sum(vectors * 0.0, axis=1)))
  return scoring.row_norms(vectors), bad


def check_queries(queries, dim: int, where: str) -> np.ndarray:
  """Queries as float32 (Q, dim), finite: a ValueError naming `where`
  otherwise."""
  queries = floats(where, "queries", queries)
  if queries.ndim != 2 or queries.shape[1] != dim:
    raise ValueError(f"{where}: queries must be (Q, {dim}), got"
                     f" {queries.shape}")
  if not np.all(np.isfinite(queries)):
    raise ValueError(f"{where}: queries hold NaN or inf")
  return queries


def check_k(k: int, size: int, where: str) -> None:
  if not 1 <= k <= size:
    raise ValueError(f"{where}: k must be in [1, {size}] (the index's"
                     f" size), got {k}")


def check_layout(offsets: np.ndarray, count: int,
                 labels: Optional[np.ndarray], anchors: Optional[np.ndarray],
                 list_source: str, where: str) -> None:
  """Refuses (naming `where`) offsets that do not cut `count` stored rows
  into the index's lists, or labels out of list order."""
  listed = has_lists(anchors, labels, list_source)
  lists = len(anchors) if listed else 1
  if (offsets.shape != (lists + 1,) or offsets[0] != 0 or
      offsets[-1] != count or np.any(np.diff(offsets) < 0)):
    raise ValueError(f"{where}: offsets must rise from 0 to {count} over"
                     f" {lists} list(s), got {offsets.shape}"
                     f" {offsets[:3]}...")
  if (listed and list_source == "labels" and not np.array_equal(
      labels, np.repeat(np.arange(lists), np.diff(offsets)))):
    raise ValueError(f"{where}: labels are not in list order (the offsets"
                     f" do not match them)")


def has_lists(anchors, labels, list_source) -> bool:
  """Two-stage search has lists: anchors, and labels unless the lists come
  from the anchors."""
  return anchors is not None and (labels is not None or
                                  list_source == "anchors")


def check_unique(ids: np.ndarray, where: str) -> None:
  ordered = np.sort(ids)
  repeated = ordered[1:][ordered[1:] == ordered[:-1]]
  if len(repeated):
    raise ValueError(f"{where}: ids are not unique (id {repeated[0]} is"
                     f" repeated)")


def list_ids(embeddings, labels, anchors, list_source) -> np.ndarray:
  """Each item's list: its label, or its nearest anchor (in chunks)."""
  if list_source == "labels":
    return labels
  return np.concatenate([
      np.asarray(nearest(embeddings[s:s + _NEAREST_CHUNK], anchors, 1)[1][:, 0])
      for s in range(0, len(embeddings), _NEAREST_CHUNK)])


def floats(where: str, name: str, values) -> np.ndarray:
  values = np.asarray(values)
  if values.dtype.kind not in "fiu":
    raise ValueError(f"{where}: {name} must be numbers, got dtype"
                     f" {values.dtype}")
  return np.asarray(values, np.float32)  # no copy when already float32


def integers(where: str, name: str, values) -> np.ndarray:
  """int64 from integers only: a float id or label is an error, never
  rounded (1.5 would silently become 1)."""
  values = np.asarray(values)
  if values.dtype.kind not in "iu" and values.size:
    raise ValueError(f"{where}: {name} must be integers, got dtype"
                     f" {values.dtype}")
  return np.asarray(values, np.int64)


def validate(embeddings, ids, labels, anchors, list_source,
              where: str) -> None:
  """Shape, dtype and consistency checks; errors name `where` and the
  field. (Finiteness is checked on the index's own copy.)"""
  e = embeddings
  if e.ndim != 2 or e.dtype != np.float32:
    raise ValueError(f"{where}: embeddings must be float32 (N, D), got"
                     f" {e.dtype} {e.shape}")
  validate_fields(len(e), e.shape[1], ids, labels, anchors, list_source,
                  where)


def validate_fields(count: int, dim: int, ids: np.ndarray,
                    labels: Optional[np.ndarray],
                    anchors: Optional[np.ndarray], list_source: str,
                    where: str) -> None:
  """`_validate` of everything but the rows themselves: `count` rows of
  `dim` values (the on-disk index checks its files so)."""
  if ids.shape != (count,) or ids.dtype != np.int64:
    raise ValueError(f"{where}: ids must be int64 ({count},), got"
                     f" {ids.dtype} {ids.shape}")
  if labels is not None and labels.shape != (count,):
    raise ValueError(f"{where}: labels must have shape ({count},), got"
                     f" {labels.shape}")
  if labels is not None and len(labels) and labels.min() < 0:
    raise ValueError(f"{where}: labels must be class ids >= 0, got"
                     f" {labels.min()}")
  if anchors is not None and (anchors.ndim != 2 or
                              anchors.shape[1] != dim or
                              not len(anchors)):
    raise ValueError(f"{where}: anchors must be (C, {dim}) with C >= 1,"
                     f" got {anchors.shape}")
  if anchors is not None and not np.all(np.isfinite(anchors)):
    raise ValueError(f"{where}: anchors hold NaN or inf")
  if list_source not in ("labels", "anchors"):
    raise ValueError(f"{where}: list_source must be 'labels' or 'anchors',"
                     f" got {list_source!r}")
  if list_source == "anchors" and anchors is None:
    raise ValueError(f"{where}: list_source='anchors' needs anchors")
  if (labels is not None and anchors is not None and len(labels) and
      labels.max() >= len(anchors)):
    raise ValueError(f"{where}: labels go up to {labels.max()} but there"
                     f" are {len(anchors)} anchors")
