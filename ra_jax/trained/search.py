"""Answering image queries with a trained work dir: `Searcher` (the model,
its database index, two-stage or exact search). `python -m ra_jax.search`
and the web page (`page.py`) are its two faces."""

from typing import Optional, Sequence

import numpy as np

from ra_jax.data import as_hwc
from ra_jax.distances import nearest
from ra_jax.retrieval import check_num_lists
from ra_jax.trained import images
from ra_jax.trained.run import TrainedRun

MAX_TILES = 20  # neighbours a grid shows (k may be larger)


class Searcher:
  """A trained work dir and its database index, ready to answer queries."""

  def __init__(self, workdir: str, *, progress: bool = True):
    self.run = TrainedRun(workdir)
    self.step, self.anchors = self.run.step, self.run.anchors
    self.source = self.run.source
    self.queries = self.run.split("query")
    self.database = self.run.split("database")
    self.index = self.run.database_index(progress=progress)

  @property
  def num_classes(self) -> int:
    """Lists stage 1 can keep: the number of anchors (0 without)."""
    return 0 if self.anchors is None else len(self.anchors)

  def load_image(self, source, *, max_pixels: int = images.MAX_PIXELS,
                 name: Optional[str] = None) -> np.ndarray:
    """An image file (path or bytes) as uint8 (H, W, C) with the model's
    channels (`images.decode_image`)."""
    return images.decode_image(source, self.run.channels,
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
    query = self.run.embed_image(image)
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
    result["labels"] = self.index.labels[result["ids"]]
    return result

  def class_name(self, label: int) -> str:
    names = self.source.class_names
    return names[label] if 0 <= label < len(names) else str(label)

  def neighbour_image(self, item: int) -> np.ndarray:
    return as_hwc(self.database[int(item)]["image"])

  def grid(self, image: np.ndarray, found: dict):
    """`grid` of the query and its neighbours in `found`, captioned with
    class and distance."""
    shown = list(zip(found["ids"], found["labels"],
                     found["distances"]))[:MAX_TILES]
    return grid(image, [self.neighbour_image(i) for i, _, _ in shown],
                [f"{self.class_name(int(label))} {d:.2f}"
                 for _, label, d in shown])


def grid(query: np.ndarray, neighbours: Sequence[np.ndarray],
         captions: Sequence[str]):
  """The query, then its first MAX_TILES neighbours, each captioned, in
  one row (a PIL image)."""
  return images.render_rows([[(query, "query", "black")] + [
      (image, caption, "black")
      for image, caption in list(zip(neighbours, captions))[:MAX_TILES]]])
