"""A web page to query a trained run, or an export of one (see
ra_jax/trained/page.py).

  python -m ra_jax.serve --workdir /tmp/ra_jax_digits [--port 8000]
  python -m ra_jax.serve --export /tmp/digits_export [--host 0.0.0.0]

Open http://127.0.0.1:8000/, upload an image (or, from a work dir, pick a
random test image), and see the classes stage 1 keeps and the top-k
neighbours. An export directory (`python -m ra_jax.export`) is what one
deploys: it needs no dataset and no checkpoint, and its results show the
database's ids, labels and distances (it holds no images).
"""

from absl import flags

from ra_jax import cli
from ra_jax.trained import images

_WORKDIR = cli.workdir_flag("a trained run's work dir (or --export)",
                            required=False)
_EXPORT = flags.DEFINE_string("export", None, "an export directory"
                              " (python -m ra_jax.export; or --workdir)")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "address to listen on")
_INDEX_STORAGE = cli.index_storage_flag()
_PORT = flags.DEFINE_integer("port", 8000, "port to listen on")
_MAX_PIXELS = flags.DEFINE_integer(
    "max_pixels", images.MAX_PIXELS, "larger uploads are refused (413)"
    " before they are decoded")


def main(argv):
  del argv
  if bool(_WORKDIR.value) == bool(_EXPORT.value):
    cli.fail("give --workdir (a trained run) or --export (an export"
             " directory), one of them")
  import uvicorn
  from ra_jax.trained import page
  from ra_jax.trained.search import ExportSearcher, Searcher
  if _EXPORT.value:
    if _INDEX_STORAGE.value:
      cli.fail("--index_storage: an export serves the index it was"
               " exported with (python -m ra_jax.export --index_storage)")
    cli.start()  # an export is served by one process
    searcher, served = ExportSearcher(_EXPORT.value), _EXPORT.value
  else:
    cli.start(_WORKDIR.value)
    searcher = Searcher(_WORKDIR.value, index_storage=_INDEX_STORAGE.value)
    served = _WORKDIR.value
  print(f"serving step {searcher.step} of {served} at"
        f" http://{_HOST.value}:{_PORT.value}/", flush=True)
  uvicorn.run(page.make_app(searcher, max_pixels=_MAX_PIXELS.value),
              host=_HOST.value, port=_PORT.value, log_level="warning")


if __name__ == "__main__":
  cli.run(main)
