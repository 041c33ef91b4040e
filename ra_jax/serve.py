"""A local web page to query a trained run (see ra_jax/trained/page.py).

  python -m ra_jax.serve --workdir /tmp/ra_jax_digits [--port 8000]

Open http://127.0.0.1:8000/, upload an image or pick a random test image,
and see the classes stage 1 keeps and the top-k neighbours.
"""

from absl import flags

from ra_jax import cli
from ra_jax.trained import images

_WORKDIR = cli.workdir_flag()
_HOST = flags.DEFINE_string("host", "127.0.0.1", "address to listen on")
_PORT = flags.DEFINE_integer("port", 8000, "port to listen on")
_MAX_PIXELS = flags.DEFINE_integer(
    "max_pixels", images.MAX_PIXELS, "larger uploads are refused (413)"
    " before they are decoded")


def main(argv):
  del argv
  import uvicorn
  from ra_jax.trained import page
  from ra_jax.trained.search import Searcher
  cli.start(_WORKDIR.value)
  searcher = Searcher(_WORKDIR.value)
  print(f"serving step {searcher.step} of {_WORKDIR.value} at"
        f" http://{_HOST.value}:{_PORT.value}/", flush=True)
  uvicorn.run(page.make_app(searcher, max_pixels=_MAX_PIXELS.value),
              host=_HOST.value, port=_PORT.value, log_level="warning")


if __name__ == "__main__":
  cli.run(main)
