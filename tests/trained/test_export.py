"""Export: the encoder runs with jax alone and gives the trainer's
embeddings; the manifest says how to prepare images; nothing is
overwritten."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export as jax_export

from ra_jax import data, models, retrieval
from ra_jax.trained import TrainedRun, export
from tests import runs, tiny_models

# Runs in a fresh interpreter: jax, numpy and PIL only.
_OUTSIDE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from jax import export
    from PIL import Image

    out, images_path, result_path = sys.argv[1:]
    manifest = json.load(open(f"{out}/manifest.json"))
    prep = manifest["preprocessing"]
    encoder = export.deserialize(
        open(f"{out}/{manifest['encoder']['file']}", "rb").read())

    def prepare(image):
      height, width = prep["crop"]
      if image.shape[:2] != (height, width):
        pil = Image.fromarray(image.squeeze()).convert(prep["pil_mode"])
        scale = prep["shorter_side"] / min(pil.size)
        pil = pil.resize((max(width, round(pil.size[0] * scale)),
                          max(height, round(pil.size[1] * scale))),
                         Image.BILINEAR)
        image = np.asarray(pil).reshape(pil.size[1], pil.size[0], -1)
        top = (image.shape[0] - height) // 2
        left = (image.shape[1] - width) // 2
        image = image[top:top + height, left:left + width]
      mean, std = np.float32(prep["mean"]), np.float32(prep["std"])
      return (image.astype(np.float32) / 255 - mean) / std

    images = np.load(images_path)
    batch = np.stack([prepare(image) for image in images])
    first = np.asarray(encoder.call(batch[:7]))  # any batch size
    rest = np.asarray(encoder.call(batch[7:]))
    np.save(result_path, np.concatenate([first, rest]))
    assert not {"ra_jax", "flax", "optax"} & set(sys.modules), sorted(
        m for m in sys.modules if m.split(".")[0] in ("ra_jax", "flax"))
""")


@pytest.mark.slow
def test_the_export_reproduces_the_trainers_embeddings_without_ra_jax(
    digits_run, tmp_path):
  out = tmp_path / "export"
  manifest = export.export_run(digits_run, str(out), platforms=("cpu",))
  assert json.load(open(out / "manifest.json")) == manifest
  assert manifest["output"]["geometry"] == "l2"
  assert manifest["encoder"]["input"]["shape"] == ["batch", 8, 8, 1]
  assert len(manifest["class_names"]) == 10

  run = TrainedRun(digits_run)
  query = run.split("query")
  raw = np.stack([np.asarray(query[i]["image"]) for i in range(20)])
  np.save(tmp_path / "images.npy", raw)
  env = {k: v for k, v in runs.cli_env(1).items() if k != "PYTHONPATH"}
  outside = subprocess.run(
      [sys.executable, "-c", _OUTSIDE, str(out), str(tmp_path / "images.npy"),
       str(tmp_path / "embedded.npy")], cwd=tmp_path, env=env,
      capture_output=True, text=True, timeout=120)
  assert outside.returncode == 0, outside.stderr[-3000:]
  embedded = np.load(tmp_path / "embedded.npy")
  expected, _ = run.embed_split(data.SubsetSplit(query, np.arange(20)))
  np.testing.assert_allclose(embedded, expected, rtol=1e-5, atol=1e-5)

  database = retrieval.Index.load(str(out / "database.npz"))
  assert len(database) == manifest["database"]["count"]
  np.testing.assert_array_equal(database.anchors, run.anchors)
  with pytest.raises(ValueError, match="already holds an export"):
    export.export_run(digits_run, str(out), platforms=("cpu",))
  assert json.load(open(out / "manifest.json")) == manifest  # untouched

  faiss = pytest.importorskip("faiss")
  from ra_jax.retrieval import faiss_interop
  from tests.retrieval.test_faiss import assert_same_results
  assert manifest["faiss"]["index"] == "IndexIVFFlat"
  ivf = faiss.read_index(str(out / "database.faiss"))
  queries = database.vectors[:5] + 0.01
  assert_same_results(
      database.search(queries, 5, two_stage=True, num_lists=2),
      faiss_interop.search(ivf, queries, 5, num_lists=2), rtol=1e-4)



@pytest.mark.slow
def test_a_convolutional_encoder_takes_any_batch_and_lowers_for_accelerators():
  model = models.get_model("resnet18_cifar", width=4, embedding_dim=8,
                           num_classes=3)
  model = tiny_models.two_stage_resnet(model)  # lowered three times
  variables = jax.jit(model.init)(jax.random.PRNGKey(0),
                                  jnp.zeros((1, 16, 16, 3)))
  serialized = export.export_encoder(model.apply, variables, (16, 16, 3))
  encoder = jax_export.deserialize(serialized)
  assert set(encoder.platforms) == {"cpu", "cuda", "tpu"}
  for batch in (1, 5):
    images = jax.random.normal(jax.random.PRNGKey(batch), (batch, 16, 16, 3))
    np.testing.assert_allclose(encoder.call(images),
                               model.apply(variables, images),
                               rtol=1e-5, atol=1e-5)


def test_bad_platforms_and_missing_runs_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="platforms must be some of cpu, cuda,"
                     " tpu; got gpu"):
    export.export_run(str(tmp_path), str(tmp_path / "out"),
                      platforms=("gpu",))
  with pytest.raises(FileNotFoundError, match="holds no run"):
    export.export_run(str(tmp_path / "none"), str(tmp_path / "out"),
                      platforms=("cpu",))
  assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
def test_export_command_writes_once_and_then_refuses(digits_run, tmp_path):
  command = [sys.executable, "-m", "ra_jax.export", "--workdir", digits_run,
             "--out", str(tmp_path / "out"), "--platforms", "cpu"]
  first = subprocess.run(command, cwd=runs.ROOT, env=runs.cli_env(1),
                         capture_output=True, text=True, timeout=300)
  assert first.returncode == 0, first.stderr[-3000:]
  assert (f"exported step {runs.SHARED_STEPS} of {digits_run} (mlp, cam, l2"
          " geometry) for cpu") in first.stdout
  assert (tmp_path / "out" / "database.faiss").exists() == (
      "(also for faiss)" in first.stdout)
  again = subprocess.run(command, cwd=runs.ROOT, env=runs.cli_env(1),
                         capture_output=True, text=True, timeout=300)
  assert again.returncode == 2
  assert again.stderr.strip().splitlines()[-1].endswith(
      "already holds an export (manifest.json); choose another --out")
