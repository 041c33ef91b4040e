"""Query a trained model: the nearest database images of an image file.

  python -m ra_jax.search --workdir /tmp/digits --query seven.png [--k 10]
      [--num_lists 2 | --exact] [--query_index 17] [--output grid.png]

Loads the work dir's config and newest checkpoint, and the index of the
database split's embeddings (built on first use with a progress bar and
cached as `workdir/index/step_<N>.npz`, so a newer checkpoint gets a new
one). Prints the classes stage 1 keeps (nearest anchors) and the top-k
neighbours (database id, label, distance), and writes a PNG grid of the
query and its neighbours (default `workdir/search/<query>.png`).
"""

import os
from typing import Optional

import numpy as np
from absl import flags
from absl import logging

from ra_jax import cli, files
from ra_jax.training import experiment, runtime
from ra_jax.training import image_search

_WORKDIR = flags.DEFINE_string("workdir", None, "a trained run's work dir")
_QUERY = flags.DEFINE_multi_string("query", [], "image file(s) to search with")
_QUERY_INDEX = flags.DEFINE_multi_integer(
    "query_index", [], "example(s) of the dataset's query split to search with")
_K = flags.DEFINE_integer("k", 10, "neighbours to return")
_NUM_LISTS = flags.DEFINE_integer("num_lists", 1, "classes stage 1 keeps")
_EXACT = flags.DEFINE_bool("exact", False, "rank the whole database instead")
_OUTPUT = flags.DEFINE_string("output", None, "PNG grid path (one query)")
flags.mark_flags_as_required(["workdir"])


def _queries(searcher: image_search.Searcher):
  for path in _QUERY.value:
    name = os.path.splitext(os.path.basename(path))[0]
    yield name, searcher.load_image(path), None
  split = searcher.source.splits[searcher.source.query_split]
  for i in _QUERY_INDEX.value:
    if not 0 <= i < len(split):
      raise ValueError(f"--query_index {i}: the query split has {len(split)}"
                       " examples")
    record = split[i]
    image = np.asarray(record["image"])
    yield (f"{searcher.source.query_split}_{i}",
           image[..., None] if image.ndim == 2 else image,
           int(record["label"]))


def main(argv) -> Optional[int]:
  del argv
  logging.set_verbosity(logging.WARNING)
  if not _QUERY.value and not _QUERY_INDEX.value:
    cli.fail("give --query IMAGE or --query_index N")
  if _OUTPUT.value and len(_QUERY.value) + len(_QUERY_INDEX.value) > 1:
    cli.fail("--output names one grid; give one query")
  if _K.value < 1:
    cli.fail(f"--k {_K.value}: give at least 1 neighbour")
  runtime.initialize(experiment.config_of(_WORKDIR.value).get(
      "distributed", "auto"))
  searcher = image_search.Searcher(_WORKDIR.value)
  if _K.value > len(searcher.index):
    cli.fail(f"--k {_K.value}: the database has {len(searcher.index)}"
             " images")
  queries = list(_queries(searcher))
  print(f"checkpoint step {searcher.step}, database"
        f" '{searcher.source.database_split}' ({len(searcher.index)} images)")
  for name, image, true_label in queries:
    found = searcher.search(image, _K.value, _NUM_LISTS.value, _EXACT.value)
    print(f"\nquery {name}" + ("" if true_label is None else
                                 f" (label {searcher.class_name(true_label)})"))
    if found["classes"]:
      kept = "" if _EXACT.value else f", kept {_NUM_LISTS.value}"
      print(f"stage 1 nearest classes{kept}: " + ", ".join(
          f"{searcher.class_name(c)} ({d:.3f})" for c, d in found["classes"]))
    print(f"{'rank':>4}  {'id':>6}  {'label':<16}  distance")
    for rank, (i, label, d) in enumerate(zip(found["ids"], found["labels"],
                                             found["distances"]), 1):
      print(f"{rank:>4}  {i:>6}  {searcher.class_name(int(label)):<16}  {d:.4f}")
    path = _OUTPUT.value or files.join(_WORKDIR.value, "search",
                                       f"{name}.png")
    shown = found["ids"][:image_search.MAX_TILES]
    neighbours = [np.asarray(searcher.database[int(i)]["image"])
                  for i in shown]
    image_search.write_grid(path, image, neighbours, [
        f"{searcher.class_name(int(l))} {d:.2f}"
        for l, d in zip(found["labels"], found["distances"])])
    more = (f" (the first {len(shown)} of {len(found['ids'])})"
            if len(shown) < len(found["ids"]) else "")
    print(f"grid written to {path}{more}")
  return 0


if __name__ == "__main__":
  cli.run(main)
