"""Answering image queries with a trained work dir: `Searcher` (the model,
its database index, two-stage or exact search) and `write_grid` (a PNG of a
query and its neighbours). `python -m ra_jax.search` is the CLI."""

import numpy as np
from PIL import Image, ImageDraw

from ra_jax import files
from ra_jax.distances import nearest
from ra_jax.training import trained

_TILE = 96  # pixels per image in the grid
MAX_TILES = 20  # neighbours a grid shows (k may be larger)


class Searcher:
  """A trained work dir and its database index, ready to answer queries."""

  def __init__(self, workdir: str, *, progress: bool = True):
    self.run = trained.TrainedRun(workdir)
    self.step, self.anchors = self.run.step, self.run.anchors
    self.source = self.run.source
    self.database = self.run.split("database")
    self.index = self.run.database_index(progress=progress)

  def load_image(self, path: str) -> np.ndarray:
    """An image file as uint8 (H, W, C) with the dataset's channels."""
    try:
      with files.open_file(path, "rb") as raw, Image.open(raw) as image:
        channels = self.run.exp.image_shape[-1]
        image = image.convert("L" if channels == 1 else "RGB")
        array = np.asarray(image)
    except (OSError, ValueError) as error:
      raise ValueError(f"query image {path}: not a readable image ({error})"
                       ) from error
    return array[..., None] if array.ndim == 2 else array

  def embed(self, image: np.ndarray) -> np.ndarray:
    return self.run.embed_image(image)

  def search(self, image: np.ndarray, k: int, num_lists: int,
             exact: bool) -> dict:
    """Stage 1's classes (if anchors) and the top-k neighbours of `image`."""
    query = self.embed(image)
    result = {"classes": []}
    two_stage = self.anchors is not None and not exact
    if two_stage and not 1 <= num_lists <= len(self.anchors):
      raise ValueError(f"num_lists={num_lists}: must be in [1,"
                       f" {len(self.anchors)}] (the number of classes)")
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


def write_grid(path: str, query: np.ndarray, neighbours: list[np.ndarray],
               captions: list[str]) -> None:
  """The query, then its first MAX_TILES neighbours, left to right, each
  captioned."""
  tiles = [query] + neighbours[:MAX_TILES]
  caption_height = 14
  grid = Image.new("RGB", (_TILE * len(tiles), _TILE + caption_height),
                   "white")
  draw = ImageDraw.Draw(grid)
  for i, (tile, caption) in enumerate(zip(tiles, ["query"] + captions)):
    image = Image.fromarray(np.squeeze(tile).astype(np.uint8))
    grid.paste(image.convert("RGB").resize((_TILE, _TILE), Image.NEAREST),
               (i * _TILE, caption_height))
    draw.text((i * _TILE + 2, 1), caption[:16], fill="black")
  with files.atomic_write(path, "wb") as f:
    grid.save(f, format="PNG")


