"""font_chars: which fonts are used, how designs are split, the images, and
the TFDS build from a handful of Debian's fonts (.ci/run installs
font_chars.SMALL_PACKAGES)."""

import os
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ra_jax import data
from ra_jax.data.builders import font_chars, glyphs

DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _package_fonts() -> list[str]:
  """The .ttf files of SMALL_PACKAGES; skips where one is missing."""
  found = []
  for package in font_chars.SMALL_PACKAGES:
    listing = subprocess.run(["dpkg-query", "-L", package],
                             capture_output=True, text=True, check=False)
    if listing.returncode:
      pytest.skip(f"{package} is not installed (apt-get install"
                  f" {' '.join(font_chars.SMALL_PACKAGES)}; .ci/run does)")
    found += [p for p in listing.stdout.split() if p.endswith(".ttf")
              and os.path.isfile(p)]
  return sorted(found)


@pytest.fixture(scope="module")
def fonts_dir(tmp_path_factory) -> str:
  """A folder of links to the small packages' fonts: the build sees these
  and nothing else installed."""
  folder = tmp_path_factory.mktemp("fonts")
  for path in _package_fonts():
    os.symlink(path, folder / os.path.basename(path))
  return str(folder)


@pytest.fixture(scope="module")
def small_dir(fonts_dir, tmp_path_factory) -> str:
  """A TFDS data dir with font_chars/small built from `fonts_dir`."""
  path = str(tmp_path_factory.mktemp("tfds"))
  data.get_source("font_chars/small", data_dir=path, manual_dir=fonts_dir)
  return path


@pytest.fixture(scope="module")
def small(small_dir):
  return data.get_source("font_chars/small", data_dir=small_dir)


def _edited_font(tmp_path, family: str, cmap_edit=None) -> str:
  """DejaVu Sans under another family name, its character map edited."""
  from fontTools import ttLib
  if not os.path.isfile(DEJAVU):
    pytest.skip("fonts-dejavu-core is not installed")
  font = ttLib.TTFont(DEJAVU)
  for record in font["name"].names:
    if record.nameID in (1, 16):
      record.string = family
  for table in font["cmap"].tables:
    if cmap_edit and table.isUnicode():
      cmap_edit(table.cmap)
  path = str(tmp_path / f"{family.replace(' ', '')}.ttf")
  font.save(path)
  return path


def test_the_classes_are_100_distinct_characters_without_homoglyphs():
  assert len(glyphs.CLASSES) == len(set(glyphs.CLASSES)) == 100
  # one of each set that differs only in size or is one stroke
  for confusable in ("oO0", "cC", "sS", "vV", "wW", "xX", "zZ", "pP", "uU",
                     "Il|1"):
    assert sum(c in glyphs.CLASSES for c in confusable) <= 2 - (
        confusable != "Il|1"), confusable
  assert not set(".,'`-_") & set(glyphs.CLASSES)


def test_fonts_that_cannot_render_the_classes_are_left_out(tmp_path):
  capitals = _edited_font(tmp_path, "All Capitals",
                          lambda cmap: cmap.update({ord("a"): cmap[ord("A")]}))
  missing = _edited_font(tmp_path, "No Eszett",
                         lambda cmap: cmap.pop(ord("ß"), None))
  with open(tmp_path / "broken.ttf", "wb") as f:
    f.write(b"not a font")
  faces, unreadable = glyphs.find_faces([str(tmp_path)], glyphs.CLASSES)
  assert [f.path for f in faces] == [capitals]  # no ß: not a candidate
  assert missing not in {f.path for f in faces}
  assert list(unreadable) == [str(tmp_path / "broken.ttf")]
  reason = glyphs.check_face(glyphs.glyph_masks(faces[0], glyphs.CLASSES),
                             glyphs.CLASSES)
  assert reason is not None and "'A' and 'a' render alike" in reason
  assert glyphs.check_face(glyphs.glyph_masks(
      glyphs.Face(DEJAVU, 0, "DejaVu Sans", "Book"), glyphs.CLASSES),
      glyphs.CLASSES) is None


def test_clones_and_weights_of_one_family_are_one_design(tmp_path):
  shutil.copy(DEJAVU, tmp_path / "DejaVuSans.ttf")
  _edited_font(tmp_path, "Cloned Sans")
  survey = font_chars.survey_fonts([str(tmp_path)])
  assert sorted(survey.family_thumbs) == ["Cloned Sans", "DejaVu Sans"]
  thumbs = np.stack([survey.family_thumbs[f].astype(np.float32)
                     for f in ("Cloned Sans", "DejaVu Sans")])
  assert glyphs.design_groups(thumbs, 0.8).tolist() == [0, 0]
  # unlike glyphs, one stem: one design
  rng = np.random.default_rng(0)
  unlike = rng.uniform(0, 1, (3, 4, 16)).astype(np.float32)
  assert glyphs.design_groups(unlike, 0.99).tolist() == [0, 1, 2]
  assert glyphs.design_groups(
      unlike, 0.99, ["Kurier", "Kurier Cond Light", "Iwona"]).tolist() == [
          0, 0, 1]
  assert glyphs.family_stem("PT Sans Narrow") == "pt sans"
  assert glyphs.family_stem("Bold") == "bold"  # never empty


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), side=st.sampled_from([16, 32, 48]),
       char=st.sampled_from(glyphs.CLASSES))
def test_render_is_seeded_in_bounds_and_visible(seed, side, char):
  mask = glyphs.glyph_masks(glyphs.Face(DEJAVU, 0, "DejaVu Sans", "Book"),
                            char)[0]
  options = glyphs.RenderOptions(image_size=side)
  image = glyphs.render(mask, np.random.default_rng(seed), options)
  assert image.shape == (side, side, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(
      image, glyphs.render(mask, np.random.default_rng(seed), options))
  # the glyph's colour differs from the background by >= min_contrast in
  # luma, so some pixels stand out from the background's gradient
  luma = image.astype(np.float64) @ np.asarray([0.299, 0.587, 0.114])
  assert np.ptp(luma) >= 0.5 * options.min_contrast * 255


def test_small_build_splits_designs_and_records_every_font(small, small_dir):
  assert small.num_classes == 100 and small.image_shape == (32, 32, 3)
  assert (small.query_split, small.database_split) == ("test", "train")
  assert small.split_sizes == {"train": 800, "validation": 200, "test": 400}
  meta = font_chars.FontChars(config="small", data_dir=small_dir).info.metadata
  faces = meta["faces"]
  for split, per_class in (("train", 8), ("validation", 2), ("test", 4)):
    records = [small.splits[split][i] for i in range(len(small.splits[split]))]
    labels = np.asarray([r["label"] for r in records])
    np.testing.assert_array_equal(np.bincount(labels, minlength=100),
                                  per_class)
    assert {faces[r["face"]]["split"] for r in records} == {split}
    images = np.stack([r["image"] for r in records])
    assert images.shape[1:] == (32, 32, 3)
    assert images.reshape(len(images), -1).std(0).mean() > 40  # varied
  designs = {}
  for face in faces:
    designs.setdefault(face["design"], set()).add(face["split"])
    assert face["package"] in font_chars.SMALL_PACKAGES and face["version"]
    assert face["sha256"] == font_chars.sha256_of(face["path"])
  assert all(len(splits) == 1 for splits in designs.values())
  assert set(meta["designs"]) == {"train", "validation", "test"}
  # Arimo is a clone of Liberation Sans (fonts-croscore): one design
  design = {f["family"]: f["design"] for f in faces}
  assert design["Arimo"] == design["Liberation Sans"]
  assert design["DejaVu Sans"] != design["Liberation Sans"]
  assert meta["classes"] == glyphs.CLASSES


def test_small_build_is_the_same_on_every_build(small, fonts_dir, tmp_path):
  again = data.get_source("font_chars/small", data_dir=str(tmp_path),
                          manual_dir=fonts_dir)
  for split in ("validation", "test"):
    first = [small.splits[split][i] for i in range(len(small.splits[split]))]
    second = [again.splits[split][i] for i in range(len(again.splits[split]))]
    key = lambda r: (r["label"], r["face"], r["image"].tobytes())  # noqa: E731
    assert sorted(map(key, first)) == sorted(map(key, second))
  # the fingerprint, read back from the prepared build, pins the fonts
  assert small.fingerprint and again.fingerprint == small.fingerprint
  assert again.metadata == small.metadata and small.metadata["faces"]
  assert small.describe()["fingerprint"] == small.fingerprint
  decoded = data.in_memory(small, "always")  # as the trainer holds it
  assert (decoded.fingerprint, decoded.metadata) == (small.fingerprint,
                                                     small.metadata)


def test_too_few_fonts_is_an_error_that_says_what_to_install(tmp_path):
  shutil.copy(DEJAVU, tmp_path / "DejaVuSans.ttf")
  with pytest.raises(ValueError, match="apt-get install fonts-dejavu-core"):
    data.get_source("font_chars/small", data_dir=str(tmp_path / "tfds"),
                    manual_dir=str(tmp_path))
  # nothing half-built is left where the next build would look
  assert not os.listdir(tmp_path / "tfds" / "font_chars" / "small")
  # three families, one design: still too few to split
  _edited_font(tmp_path, "Clone One")
  _edited_font(tmp_path, "Clone Two")
  survey = font_chars.survey_fonts([str(tmp_path)])
  assert len(survey.family_thumbs) == 3
  with pytest.raises(ValueError, match=r"1 font designs \(3 usable"):
    font_chars.plan_fonts(survey, seed=0)
  with pytest.raises(ValueError, match="has the configs full, small"):
    data.get_source("font_chars/tiny", data_dir=str(tmp_path / "tfds"))


@pytest.mark.slow
def test_the_config_trains_and_retrieves_on_the_small_build(
    small_dir, fonts_dir, tmp_path):
  from configs import common
  from configs import font_chars as font_config
  from ra_jax.training import loop
  config = font_config.get_config("size=tiny")
  assert config.dataset.image_size == 32 and config.dataset.images_per_class
  common.set_fields(config, {
      "dataset.name": "font_chars/small", "dataset.data_dir": small_dir,
      "dataset.manual_dir": fonts_dir, "model.name": "mlp",
      "dataset.query_split": "validation"})  # selection's queries
  results = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["dataset"]["split_sizes"] == {"train": 800,
                                               "validation": 200, "test": 400}
  assert results["dataset"]["query_split"] == "validation"
  assert 0.0 < results["exact"]["map"] <= 1.0


def test_ci_installs_the_small_packages():
  with open(os.path.join(os.path.dirname(__file__), "..", "..", ".ci",
                         "run")) as f:
    script = f.read()
  for package in font_chars.SMALL_PACKAGES:
    assert package in script, package
