"""Export a trained run for use without ra_jax (see ra_jax/trained/export.py).

  python -m ra_jax.export --workdir /tmp/ra_jax_digits --out /tmp/digits_export
      [--platforms cpu,cuda,tpu]

OUT receives encoder.jaxexport (the embedding model, jax.export / StableHLO,
any batch size), manifest.json (input shape, preprocessing, geometry, class
names), database.npz (the database's embeddings, ids, labels, anchors) and,
with faiss installed, database.faiss (an IVF index over the anchors).
"""

from absl import flags

from ra_jax import cli
from ra_jax.trained import export

_WORKDIR = cli.workdir_flag()
_OUT = flags.DEFINE_string("out", None, "directory to write the export to")
_INDEX_STORAGE = cli.index_storage_flag()
_PLATFORMS = flags.DEFINE_list(
    "platforms", list(export.PLATFORMS),
    "platforms the encoder is lowered for (some of cpu, cuda, tpu)")
_FAISS = flags.DEFINE_bool(
    "faiss", None, "also write database.faiss (default: when faiss is"
    " installed)")
flags.mark_flags_as_required(["out"])


def main(argv):
  del argv
  cli.start(_WORKDIR.value)
  manifest = export.export_run(_WORKDIR.value, _OUT.value,
                               platforms=_PLATFORMS.value,
                               faiss=_FAISS.value, progress=True,
                               index_storage=_INDEX_STORAGE.value)
  run, database = manifest["run"], manifest["database"]
  print(f"exported step {run['step']} of {_WORKDIR.value} ({run['model']},"
        f" {run['loss']}, {manifest['output']['geometry']} geometry) for"
        f" {', '.join(manifest['encoder']['platforms'])}: encoder, manifest"
        f" and {database['count']} database items"
        f"{' (also for faiss)' if manifest['faiss'] else ''} in {_OUT.value}")


if __name__ == "__main__":
  cli.run(main)
