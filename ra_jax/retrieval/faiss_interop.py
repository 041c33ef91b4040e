"""ra_jax's indexes as faiss indexes (the optional `.[faiss]` extra).

Two-stage search is an inverted-file index whose coarse centroids are the
learned class anchors: `to_faiss(index)` builds a faiss `IndexIVFFlat` whose
coarse quantizer (an `IndexFlatL2`) holds the anchors, in class order, and
whose inverted list c holds exactly the items of ra_jax's list c (their
label, or their nearest anchor for `list_source="anchors"`), each stored
under its ra_jax id. With `nprobe = num_lists`, faiss then scans the
`num_lists` lists whose anchors are nearest to the query and ranks their
items by L2, which is `Index.search(..., two_stage=True,
num_lists=num_lists)`: the same ids and the same squared L2 distances (up
to float rounding). `exact=True` gives an `IndexFlatL2` behind an
`IndexIDMap2` instead: exact search.

faiss is imported only here, so `ra_jax.retrieval` needs it only for this.
"""

from typing import Any

import numpy as np


def _faiss():
  try:
    import faiss
  except ImportError as error:
    raise ImportError("faiss is not installed: pip install -e '.[faiss]'"
                      " (faiss-cpu)") from error
  return faiss


def to_faiss(index: Any, *, exact: bool = False) -> Any:
  """A faiss index holding `index`'s items under their ids (see module
  docstring). Two-stage (exact=False) needs anchors in `index`."""
  faiss = _faiss()
  embeddings = np.ascontiguousarray(index.vectors, np.float32)
  ids = np.ascontiguousarray(index.ids, np.int64)
  dim = embeddings.shape[1]
  if exact:
    flat = faiss.IndexIDMap2(faiss.IndexFlatL2(dim))
    flat.add_with_ids(embeddings, ids)
    return flat
  if index.anchors is None:
    raise ValueError("to_faiss: two-stage search needs anchors in the index;"
                     " pass exact=True for a flat index")
  anchors = np.ascontiguousarray(index.anchors, np.float32)
  quantizer = faiss.IndexFlatL2(dim)
  quantizer.add(anchors)
  ivf = faiss.IndexIVFFlat(quantizer, dim, len(anchors), faiss.METRIC_L2)
  ivf.is_trained = True  # the anchors are the centroids; nothing to learn
  lists = np.ascontiguousarray(index.db_lists(), np.int64)
  # add_core takes each item's list as given, instead of assigning it to
  # its nearest centroid: lists by label stay lists by label.
  ivf.add_core(len(embeddings), faiss.swig_ptr(embeddings),
               faiss.swig_ptr(ids), faiss.swig_ptr(lists))
  ivf.nprobe = 1
  return ivf


def search(faiss_index: Any, queries: np.ndarray, k: int, *,
           num_lists: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """(squared L2 distances, ids), each (Q, k), from a `to_faiss` index, as
  `Index.search` gives them: missing results have id -1 and distance inf
  (faiss: the largest float). `num_lists`: lists scanned (nprobe) by an IVF
  index."""
  if hasattr(faiss_index, "nprobe"):
    faiss_index.nprobe = num_lists
  distances, ids = faiss_index.search(
      np.ascontiguousarray(queries, np.float32), k)
  distances[ids < 0] = np.inf
  return distances, ids
