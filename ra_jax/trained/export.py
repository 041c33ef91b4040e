"""A trained run as files that need jax (and flatbuffers, which
jax.export deserializes with) and nothing of ra_jax.

`export_run(workdir, out)` writes into the directory `out`:

- `encoder.jaxexport`: the embedding model with its weights, serialized by
  `jax.export` (StableHLO). Input float32 (batch, H, W, C), NHWC, any batch
  size; output float32 (batch, D). Load and call it with jax (with the
  flatbuffers package installed):

      from jax import export
      encoder = export.deserialize(open("encoder.jaxexport", "rb").read())
      embeddings = encoder.call(images)

- `manifest.json`: what the encoder expects and gives (`preprocessing`:
  channels, resize, center crop, normalisation written out as numbers;
  `output.geometry`: "l2" for raw Euclidean embeddings or "sphere" for unit
  vectors compared by cosine), the run it came from, the class names.
- `database.npz`: the database split's index (`retrieval.Index` format:
  embeddings, ids, labels, and the class anchors when the loss has them);
  or, for a run with `eval.index_storage` "disk" / "disk_float16", the
  directory `database/` (`retrieval.DiskIndex`, memory-mapped; the
  manifest's `database.file` names which).
- `database.faiss` (when faiss is installed and the index is in memory, or
  when asked for): the same index
  for faiss (`Index.to_faiss`): an `IndexIVFFlat` whose centroids are the
  anchors and whose lists are ra_jax's (nprobe = lists to scan gives
  two-stage search), or a flat index for a loss without anchors.

Every file is written atomically; an `out` that already holds an export is
refused, so an earlier export is never overwritten.
"""

import datetime
import importlib.metadata
import importlib.util
import shutil
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from jax import export as jax_export

import ra_jax
from ra_jax import data, files, retrieval
from ra_jax.data import augment as augment_lib
from ra_jax.trained.run import TrainedRun

FORMAT = "ra_jax.export"
VERSION = 1
ENCODER = "encoder.jaxexport"
MANIFEST = "manifest.json"
DATABASE = "database.npz"
DATABASE_ON_DISK = "database"  # a DiskIndex directory (eval.index_storage)
FAISS = "database.faiss"
PLATFORMS = ("cpu", "cuda", "tpu")


def export_encoder(apply: Callable, variables: Any,
                   image_shape: Sequence[int],
                   platforms: Sequence[str] = PLATFORMS) -> bytes:
  """`apply(variables, images)` with `variables` baked in, serialized for
  images float32 (batch, *image_shape) of any batch size, lowered for each
  of `platforms` (the artifact runs on any of them)."""
  batch, = jax_export.symbolic_shape("batch")
  spec = jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
  encode = jax.jit(lambda images: apply(variables, images))
  return jax_export.export(encode, platforms=tuple(platforms))(
      spec).serialize()


def preprocessing(augment: data.AugmentConfig, channels: int) -> dict:
  """`data.eval_transform` written out, for code without ra_jax."""
  size = augment.image_size
  shorter = augment_lib.eval_shorter_side(augment)
  return {
      "channels": channels, "pil_mode": "L" if channels == 1 else "RGB",
      "resize": (f"unless the image is already {size}x{size}: bilinear"
                 f" resize so that the shorter side is {shorter} (each side"
                 f" at least {size}), then the central {size}x{size} crop"),
      "shorter_side": shorter, "crop": [size, size],
      "normalize": "(pixel / 255 - mean) / std, per channel",
      "mean": list(augment.mean), "std": list(augment.std),
  }


def augment_of(written: dict) -> data.AugmentConfig:
  """The evaluation transform a manifest's `preprocessing` writes out, as
  the `data.AugmentConfig` that gives it (`preprocessing`'s inverse)."""
  size, shorter = int(written["crop"][0]), int(written["shorter_side"])
  config = data.AugmentConfig(
      size, "resized_crop" if shorter != size else "none", 0, False,
      tuple(written["mean"]), tuple(written["std"]))
  if augment_lib.eval_shorter_side(config) != shorter:
    raise ValueError(f"preprocessing resizes the shorter side to {shorter}"
                     f" for a {size}-pixel crop; ra_jax writes {size} or"
                     f" {size * 8 // 7}")
  return config


def export_run(workdir: str, out: str, *,
               platforms: Sequence[str] = PLATFORMS,
               faiss: Optional[bool] = None, progress: bool = False,
               index_storage: Optional[str] = None) -> dict:
  """Writes the export of `workdir`'s newest readable checkpoint to `out`
  and returns its manifest. `faiss`: also write database.faiss (None: when
  faiss is installed and the index is not on disk). `index_storage`:
  instead of the run's `eval.index_storage`."""
  if files.exists(files.join(out, MANIFEST)):
    raise ValueError(f"{out} already holds an export ({MANIFEST}); choose"
                     " another --out")
  unknown = sorted(set(platforms) - set(PLATFORMS))
  if not platforms or unknown:
    raise ValueError(f"platforms must be some of {', '.join(PLATFORMS)};"
                     f" got {', '.join(platforms) or 'none'}")
  run = TrainedRun(workdir)
  exp = run.exp
  encoder = export_encoder(exp.model.apply, run.variables, exp.image_shape,
                           platforms)
  index = run.database_index(progress=progress, storage=index_storage)
  on_disk = isinstance(index, retrieval.DiskIndex)
  if faiss is None:  # not by default for an index larger than memory
    faiss = importlib.util.find_spec("faiss") is not None and not on_disk
  faiss_bytes = None
  if faiss:
    import faiss as faiss_lib
    faiss_index = index.to_faiss(exact=index.anchors is None)
    faiss_bytes = faiss_lib.serialize_index(faiss_index).tobytes()
  config = exp.config
  manifest = {
      "format": FORMAT, "version": VERSION,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "software": {"ra_jax": ra_jax.__version__,
                   "jax": importlib.metadata.version("jax")},
      "run": {"workdir": workdir, "step": run.step,
              "dataset": config.dataset.name, "model": config.model.name,
              "loss": exp.loss.name},
      "encoder": {
          "file": ENCODER, "platforms": list(platforms),
          "input": {"dtype": "float32", "layout": "NHWC",
                    "shape": ["batch", *exp.image_shape]},
          "output": {"dtype": "float32",
                     "shape": ["batch", int(index.vectors.shape[1])]}},
      "preprocessing": preprocessing(exp.augment, exp.image_shape[-1]),
      "output": {"geometry": exp.geometry,
                 "distance": "euclidean" if exp.geometry == "l2" else
                 "euclidean between unit vectors (ranks as cosine)"},
      "database": {"file": DATABASE_ON_DISK if on_disk else DATABASE,
                   "count": len(index),
                   "split": run.source.database_split,
                   "lists": index.list_source,
                   "anchors": None if index.anchors is None else
                   len(index.anchors)},
      "faiss": None if faiss_bytes is None else {
          "file": FAISS, "index": type(faiss_index).__name__,
          "distances": "squared L2", "ids": "the database's ids",
          "nprobe": "number of nearest anchors' lists to scan (two-stage"
                    " search with that many lists)"},
      "class_names": list(run.source.class_names),
  }
  with files.atomic_write(files.join(out, ENCODER), "wb") as f:
    f.write(encoder)
  if on_disk:  # the files as they are: their header's hashes still hold
    shutil.copytree(index.directory, files.join(out, DATABASE_ON_DISK))
  else:
    index.save(files.join(out, DATABASE))
  if faiss_bytes is not None:
    with files.atomic_write(files.join(out, FAISS), "wb") as f:
      f.write(faiss_bytes)
  files.write_json(files.join(out, MANIFEST), manifest)  # last: marks done
  return manifest
