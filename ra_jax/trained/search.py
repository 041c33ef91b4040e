"""Answering image queries: `Searcher` (a trained work dir: its model and
database index) and `ExportSearcher` (an export directory: the serialized
encoder, the preprocessing its manifest writes out, the database index),
each two-stage or exact. `python -m ra_jax.search` and the web page
(`page.py`) are their two faces."""

from typing import Optional, Sequence

import numpy as np

from ra_jax import files, retrieval
from ra_jax.data import as_hwc
from ra_jax.data import augment as augment_lib
from ra_jax.distances import nearest
from ra_jax.retrieval import check_num_lists
from ra_jax.trained import images
from ra_jax.trained.run import TrainedRun

MAX_TILES = 20  # neighbours a grid shows (k may be larger)


class BaseSearcher:
  """What both searchers share: an embedding function, an `Index`, class
  names, the model's input channels; optional query examples and database
  images (the page's "random test image" and thumbnails)."""

  index: retrieval.BaseIndex
  class_names: Sequence[str]
  channels: int
  step: int
  queries: Sequence = ()  # records {"image", "label"}, or none
  database: Optional[Sequence] = None

  def embed(self, image: np.ndarray) -> np.ndarray:
    """(1, D) embedding of one uint8 (H, W, C) image of any size."""
    raise NotImplementedError

  @property
  def anchors(self) -> Optional[np.ndarray]:
    return self.index.anchors

  @property
  def num_classes(self) -> int:
    """Lists stage 1 can keep: the number of anchors (0 without)."""
    return 0 if self.anchors is None else len(self.anchors)

  def load_image(self, source, *, max_pixels: int = images.MAX_PIXELS,
                 name: Optional[str] = None) -> np.ndarray:
    """An image file (path or bytes) as uint8 (H, W, C) with the model's
    channels (`images.decode_image`)."""
    return images.decode_image(source, self.channels,
                               max_pixels=max_pixels, name=name)

  def query_example(self, index: int) -> tuple[np.ndarray, int]:
    """(image (H, W, C), label) of the query split's example `index`."""
    if not 0 <= index < len(self.queries):
      raise ValueError(f"query index {index}: the query split has"
                       f" {len(self.queries)} examples")
    record = self.queries[index]
    return as_hwc(record["image"]), int(record["label"])

  def search(self, image: np.ndarray, k: int, num_lists: int,
             exact: bool) -> dict:
    """Stage 1's classes (if anchors) and the top-k neighbours of `image`:
    {"classes": [(class, anchor distance)], "ids", "labels", "distances"}."""
    query = self.embed(image)
    result = {"classes": []}
    two_stage = self.anchors is not None and not exact
    if two_stage:
      check_num_lists(num_lists, self.num_classes)
    if self.anchors is not None:  # the very stage 1 the search runs
      shown = min(max(num_lists, 1), len(self.anchors))
      dist, classes = nearest(query, self.anchors, shown)
      result["classes"] = [
          (int(c), float(np.sqrt(max(d, 0.0))))
          for c, d in zip(np.asarray(classes)[0], np.asarray(dist)[0])]
    dist, ids = self.index.search(query, k, two_stage=two_stage,
                                  num_lists=num_lists)
    keep = ids[0] >= 0  # two-stage lists may hold fewer than k items
    result["ids"] = ids[0][keep]
    result["distances"] = np.sqrt(np.maximum(dist[0][keep], 0.0))
    result["labels"] = (self.index.labels_of(result["ids"])
                        if self.index.labels is not None else
                        np.full(len(result["ids"]), -1))
    return result

  def class_name(self, label: int) -> str:
    names = self.class_names
    return names[label] if 0 <= label < len(names) else str(label)

  def neighbour_image(self, item: int) -> Optional[np.ndarray]:
    """The database image of `item`, or None (an export has no images)."""
    if self.database is None:
      return None
    return as_hwc(self.database[int(item)]["image"])

  def grid(self, image: np.ndarray, found: dict):
    """`grid` of the query and its neighbours in `found`, captioned with
    class and distance (needs the database's images)."""
    shown = list(zip(found["ids"], found["labels"],
                     found["distances"]))[:MAX_TILES]
    return grid(image, [self.neighbour_image(i) for i, _, _ in shown],
                [f"{self.class_name(int(label))} {d:.2f}"
                 for _, label, d in shown])


class Searcher(BaseSearcher):
  """A trained work dir and its database index, ready to answer queries."""

  def __init__(self, workdir: str, *, progress: bool = True,
               index_storage: Optional[str] = None):
    self.run = TrainedRun(workdir)
    self.step = self.run.step
    self.source = self.run.source
    self.class_names = list(self.source.class_names)
    self.channels = self.run.channels
    self.queries = self.run.split("query")
    self.database = self.run.split("database")
    self.index = self.run.database_index(progress=progress,
                                         storage=index_storage)

  def embed(self, image: np.ndarray) -> np.ndarray:
    return self.run.embed_image(image)


class ExportSearcher(BaseSearcher):
  """An export directory (`trained.export.export_run`): the encoder runs
  through jax.export, preprocessed as its manifest says; no database or
  query images (the page shows ids, labels and distances)."""

  def __init__(self, directory: str):
    from jax import export as jax_export
    from ra_jax.trained import export
    manifest_path = files.join(directory, export.MANIFEST)
    if not files.exists(manifest_path):
      raise FileNotFoundError(f"{directory} holds no export:"
                              f" {manifest_path} does not exist")
    self.manifest = files.read_json(manifest_path)
    if self.manifest.get("format") != export.FORMAT:
      raise ValueError(f"{manifest_path}: not an ra_jax export (format"
                       f" {self.manifest.get('format')!r})")
    with files.open_file(files.join(directory, export.ENCODER), "rb") as f:
      self.encoder = jax_export.deserialize(bytearray(f.read()))
    self.index = retrieval.open_index(files.join(
        directory, self.manifest["database"].get("file", export.DATABASE)))
    self.augment = export.augment_of(self.manifest["preprocessing"])
    self.class_names = list(self.manifest["class_names"])
    self.channels = int(self.manifest["preprocessing"]["channels"])
    self.step = int(self.manifest["run"]["step"])
    self.queries = ()
    self.database = None

  def embed(self, image: np.ndarray) -> np.ndarray:
    x = augment_lib.eval_transform(image, self.augment)[None]
    return np.asarray(self.encoder.call(x), np.float32)


def grid(query: np.ndarray, neighbours: Sequence[np.ndarray],
         captions: Sequence[str]):
  """The query, then its first MAX_TILES neighbours, each captioned, in
  one row (a PIL image)."""
  return images.render_rows([[(query, "query", "black")] + [
      (image, caption, "black")
      for image, caption in list(zip(neighbours, captions))[:MAX_TILES]]])
