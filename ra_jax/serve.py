"""A local web page to query a trained run (see ra_jax/training/serving.py).

  python -m ra_jax.serve --workdir /tmp/ra_jax_digits [--port 8000]

Open http://127.0.0.1:8000/, upload an image or pick a random test image,
and see the classes stage 1 keeps and the top-k neighbours.
"""

from absl import flags
from absl import logging

from ra_jax import cli
from ra_jax.training import experiment, image_search, runtime

_WORKDIR = flags.DEFINE_string("workdir", None, "a trained run's work dir")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "address to listen on")
_PORT = flags.DEFINE_integer("port", 8000, "port to listen on")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import uvicorn
  from ra_jax.training import serving
  config = experiment.config_of(_WORKDIR.value)
  runtime.initialize(config.get("distributed", "auto"))
  searcher = image_search.Searcher(_WORKDIR.value)
  print(f"serving step {searcher.step} of {_WORKDIR.value} at"
        f" http://{_HOST.value}:{_PORT.value}/", flush=True)
  uvicorn.run(serving.make_app(searcher), host=_HOST.value, port=_PORT.value,
              log_level="warning")


if __name__ == "__main__":
  cli.run(main)
