"""Query a trained model: the nearest database images of an image file.

  python -m ra_jax.search --workdir /tmp/digits --query seven.png [--k 10]
      [--num_lists 2 | --exact] [--query_index 17] [--output grid.png]
      [--index_storage disk]

Loads the work dir's config and newest checkpoint, and the index of the
database split's embeddings (built on first use with a progress bar and
cached as `workdir/index/step_<N>.npz`, so a newer checkpoint gets a new
one; `--index_storage disk` or `disk_float16`: a memory-mapped directory
`workdir/index/step_<N>/`, for databases larger than memory). Prints the classes stage 1 keeps (nearest anchors) and the top-k
neighbours (database id, label, distance), and writes a PNG grid of the
query and its neighbours (default `workdir/search/<query>.png`). Image files
are read as the web page reads uploads (`ra_jax.trained.images`).
"""

import os
from typing import Optional

from absl import flags

from ra_jax import cli
from ra_jax.trained import images
from ra_jax.trained.search import MAX_TILES, Searcher
from ra_jax.training import workdir as workdir_lib

_WORKDIR = cli.workdir_flag()
_QUERY = flags.DEFINE_multi_string("query", [], "image file(s) to search with")
_QUERY_INDEX = flags.DEFINE_multi_integer(
    "query_index", [], "example(s) of the dataset's query split to search with")
_K = flags.DEFINE_integer("k", 10, "neighbours to return")
_INDEX_STORAGE = cli.index_storage_flag()
_NUM_LISTS = flags.DEFINE_integer("num_lists", 1, "classes stage 1 keeps")
_EXACT = flags.DEFINE_bool("exact", False, "rank the whole database instead")
_OUTPUT = flags.DEFINE_string("output", None, "PNG grid path (one query)")
_MAX_PIXELS = flags.DEFINE_integer(
    "max_pixels", images.MAX_PIXELS, "larger query images are refused"
    " before they are decoded")


def _queries(searcher: Searcher):
  for path in _QUERY.value:
    name = os.path.splitext(os.path.basename(path))[0]
    yield name, searcher.load_image(path, max_pixels=_MAX_PIXELS.value), None
  for i in _QUERY_INDEX.value:
    try:
      image, label = searcher.query_example(i)
    except ValueError as error:
      raise ValueError(f"--query_index {i}: {error}") from None
    yield f"{searcher.source.query_split}_{i}", image, label


def main(argv) -> Optional[int]:
  del argv
  if not _QUERY.value and not _QUERY_INDEX.value:
    cli.fail("give --query IMAGE or --query_index N")
  if _OUTPUT.value and len(_QUERY.value) + len(_QUERY_INDEX.value) > 1:
    cli.fail("--output names one grid; give one query")
  if _K.value < 1:
    cli.fail(f"--k {_K.value}: give at least 1 neighbour")
  cli.start(_WORKDIR.value)
  searcher = Searcher(_WORKDIR.value, index_storage=_INDEX_STORAGE.value)
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
    path = _OUTPUT.value or workdir_lib.search_grid_path(_WORKDIR.value, name)
    images.write_png(path, searcher.grid(image, found))
    shown = min(MAX_TILES, len(found["ids"]))
    more = (f" (the first {shown} of {len(found['ids'])})"
            if shown < len(found["ids"]) else "")
    print(f"grid written to {path}{more}")
  return 0


if __name__ == "__main__":
  cli.run(main)
