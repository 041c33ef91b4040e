"""font_chars: 100 classes of characters rendered from the fonts installed
on the machine, in the spirit of Chars74K's "Fnt" set and notMNIST, built
offline. Train, validation and test come from disjoint font designs.

A font is used when its character map covers all 100 classes
(`glyphs.CLASSES`), every class has ink and no two classes render alike
(`glyphs.check_face`). Fonts whose glyphs agree closely are one *design*
(clones such as Arimo and Liberation Sans; `glyphs.design_groups`), and
designs, not fonts, are split: a test query is never drawn in a design the
model trained on. Image k of class c in a split is drawn from the split's
designs in a seeded order (every design in turn, so each class sees every
design about equally), from a random family and face of that design, then
turned, scaled, placed and coloured by `glyphs.render`. Everything is
seeded: the same fonts give the same images, byte for byte.

The dataset's metadata (`builder.info.metadata`) records every font used —
file, face index, family, style, design, split, SHA-256 and the Debian
package and version that installed it — and every font left out, with why.

  get_source("font_chars")          # full: 50,000 / 5,000 / 10,000 images
  get_source("font_chars/small")    # a few images per class (CI)

`check_face` compares upright glyphs: a few classes come close once an
italic face is turned (a sans-serif "I" and "/"), which bounds the
accuracy any model reaches rather than tilting a comparison.

The full build wants at least 300 designs; `font_packages.FULL_PACKAGES`
lists the Debian packages that provided the 433 of the machine it was made
on (1.2 GB to download, 4.1 GiB installed).
"""

import dataclasses
import hashlib
import os
import shutil
import subprocess
from typing import Iterator, Sequence

import numpy as np
import PIL
import tensorflow_datasets as tfds
from PIL import features as pil_features

from ra_jax.data import builders
from ra_jax.data.builders import glyphs
from ra_jax.data.datasets import DATASETS

# /usr/share (the dataset table's manual_dir): Debian installs fonts under
# /usr/share/fonts, texlive's under /usr/share/texlive and /usr/share/texmf;
# the builder reads every font file under its manual_dir (1.5 s to walk).
DEFAULT_ROOT = DATASETS["font_chars"].manual_dir
# Fonts whose fitted glyphs agree above this mean soft IoU are one design:
# Liberation Sans and Arimo 0.89, FreeSans and Nimbus Sans 0.87, Lato and
# its derivative Carlito 0.80, while Liberation Sans and Nimbus Sans
# (Arial against Helvetica) are 0.70 apart.
DESIGN_THRESHOLD = 0.8
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = {"test": 0.2, "validation": 0.1}  # of the designs; train the rest
# What the tests build font_chars/small from (.ci/run installs them): 42
# faces of 12 families in 9 designs (Arimo, Cousine and Tinos are clones
# of Liberation Sans, Mono and Serif).
SMALL_PACKAGES = ("fonts-dejavu-core", "fonts-liberation2", "fonts-freefont-ttf",
                  "fonts-croscore")


@dataclasses.dataclass(frozen=True)
class FontPlan:
  """The usable faces, their designs and splits, and what was left out.

  Attributes:
    faces: usable faces, sorted by path and index.
    design: (len(faces),) design id of each face.
    split_of_design: design id -> split name.
    rejected: (face, reason) for faces that cover the classes but cannot
      render them.
    unreadable: path -> error for files that could not be read.
  """
  faces: Sequence[glyphs.Face]
  design: np.ndarray
  split_of_design: dict[int, str]
  rejected: Sequence[tuple[glyphs.Face, str]]
  unreadable: dict[str, str]

  def designs(self, split: str) -> list[int]:
    return sorted(d for d, s in self.split_of_design.items() if s == split)


def _rank(face: glyphs.Face) -> tuple:
  """The face that stands for its family: the upright regular weight."""
  style = face.style.lower()
  return (style not in ("regular", "book", "roman", "normal", "medium"),
          len(style), face.path, face.index)


@dataclasses.dataclass(frozen=True)
class Survey:
  """What `survey_fonts` found: the usable faces (sorted by path and
  index), the fitted glyphs (C, P) of each family's upright regular face,
  and what was left out (faces with why; unreadable files with the
  error)."""
  usable: Sequence[glyphs.Face]
  family_thumbs: dict[str, np.ndarray]
  candidates: int
  rejected: Sequence[tuple[glyphs.Face, str]]
  unreadable: dict[str, str]


def survey_fonts(roots: Sequence[str], chars: str = glyphs.CLASSES
                 ) -> Survey:
  """Every face under `roots` that covers `chars`, drawn once and checked
  (`glyphs.check_face`)."""
  candidates, unreadable = glyphs.find_faces(roots, chars)
  usable, rejected, best = [], [], {}
  for face in candidates:
    try:
      masks = glyphs.glyph_masks(face, chars)
      reason = glyphs.check_face(masks, chars)
    except (OSError, ValueError) as e:  # FreeType refuses the file
      masks, reason = None, f"{type(e).__name__}: {e}"
    if reason:
      rejected.append((face, reason))
      continue
    usable.append(face)
    if face.family not in best or _rank(face) < _rank(best[face.family][0]):
      best[face.family] = (face,
                           glyphs.thumbnails(masks).astype(np.float16))
  return Survey(usable, {f: t for f, (_, t) in best.items()},
                len(candidates), rejected, unreadable)


def plan_fonts(survey: Survey, seed: int,
               threshold: float = DESIGN_THRESHOLD) -> FontPlan:
  """Groups the surveyed families into designs and deals the designs to
  test, validation and train (SPLIT_FRACTIONS, in a `seed`ed order)."""
  families = sorted(survey.family_thumbs)
  family_design = (glyphs.design_groups(
      np.stack([survey.family_thumbs[f].astype(np.float32)
                for f in families]), threshold, families)
                   if families else np.zeros(0, int))
  design_of = dict(zip(families, family_design.tolist()))
  count = int(family_design.max()) + 1 if families else 0
  if count < 3:
    raise ValueError(
        f"font_chars: {count} font designs ({len(families)} usable"
        f" families); train, validation and test need at least 3 (of"
        f" {survey.candidates} faces covering the classes,"
        f" {len(survey.rejected)} render badly). Install fonts: apt-get"
        f" install {' '.join(SMALL_PACKAGES)}")
  order = np.random.default_rng(seed).permutation(count)
  split_of_design, start = {}, 0
  for split, fraction in SPLIT_FRACTIONS.items():
    take = max(1, round(fraction * count))
    split_of_design.update({int(d): split for d in order[start:start + take]})
    start += take
  split_of_design.update({int(d): "train" for d in order[start:]})
  return FontPlan(faces=survey.usable,
                  design=np.asarray([design_of[f.family]
                                     for f in survey.usable]),
                  split_of_design=split_of_design, rejected=survey.rejected,
                  unreadable=survey.unreadable)


def draws(plan: FontPlan, split: str, per_class: int, seed: int,
          num_classes: int) -> list[tuple[int, int, int]]:
  """(face index, class, k) for the split's images, sorted by face: image
  k of class c comes from the split's designs in a seeded order, every
  design in turn, and from a random family, then face, of that design."""
  split_index = SPLITS.index(split)
  designs = plan.designs(split)
  faces_of = {d: np.flatnonzero(plan.design == d) for d in designs}
  families_of = {d: sorted({plan.faces[i].family for i in faces_of[d]})
                 for d in designs}
  out = []
  for c in range(num_classes):
    order = np.random.default_rng([seed, split_index, c]).permutation(
        len(designs))
    for k in range(per_class):
      d = designs[order[k % len(designs)]]
      rng = np.random.default_rng([seed, split_index, c, k])
      family = families_of[d][rng.integers(len(families_of[d]))]
      members = [i for i in faces_of[d] if plan.faces[i].family == family]
      out.append((int(members[rng.integers(len(members))]), c, k))
  return sorted(out)


def sha256_of(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def debian_packages(paths: Sequence[str]) -> dict[str, tuple[str, str]]:
  """path -> (package, version) for the files a Debian package installed
  (`dpkg-query`); files of no package, or machines without dpkg, are
  left out."""
  if not paths or shutil.which("dpkg-query") is None:
    return {}
  owner = {}
  for start in range(0, len(paths), 200):
    result = subprocess.run(["dpkg-query", "-S", *paths[start:start + 200]],
                            capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
      package, _, path = line.partition(": ")
      if path in paths and "," not in package:  # "a, b: path": diverted
        owner[path] = package.split(":")[0]  # drop ":arch"
  versions = {}
  if owner:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Version}\n",
         *sorted(set(owner.values()))],
        capture_output=True, text=True, check=False)
    versions = dict(line.split(" ", 1) for line in result.stdout.splitlines()
                    if " " in line)
  return {path: (package, versions.get(package, ""))
          for path, package in owner.items()}


class FontCharsConfig(tfds.core.BuilderConfig):
  """How many images per class each split gets, and the fewest designs
  the build accepts."""

  def __init__(self, *, per_class: dict[str, int], min_designs: int,
               **kwargs):
    super().__init__(**kwargs)
    self.per_class = per_class
    self.min_designs = min_designs


class FontChars(tfds.core.GeneratorBasedBuilder):
  """100 character classes rendered from installed fonts, 32x32 RGB."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      FontCharsConfig(
          name="full", description="500 train, 50 validation and 100 test"
          " images per class; at least 300 font designs.",
          per_class={"train": 500, "validation": 50, "test": 100},
          min_designs=300),
      FontCharsConfig(
          name="small", description="8 train, 2 validation and 4 test images"
          " per class from whatever fonts are installed (at least 3"
          " designs): for tests.",
          per_class={"train": 8, "validation": 2, "test": 4}, min_designs=3),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Point manual_dir at a folder of font files (every .ttf, .otf and"
      f" .ttc under it is read; default {DEFAULT_ROOT}). The full set needs"
      " many fonts: apt-get install --no-install-recommends"
      " $(python -m ra_jax.data.builders.font_packages)")
  SEED = 0

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split("\n\n")[0],
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(32, 32, 3)),
            "label": tfds.features.ClassLabel(names=list(glyphs.CLASSES)),
            # index into metadata["faces"]: the font it was drawn in
            "face": tfds.features.Scalar(dtype=np.int32),
        }),
        supervised_keys=("image", "label"),
        metadata=tfds.core.MetadataDict(),
        homepage="https://github.com/ra-jax/ra_jax")

  def _split_generators(self, dl_manager):
    roots = [os.fspath(dl_manager.manual_dir)]  # TFDS checks it exists
    plan = plan_fonts(survey_fonts(roots), self.SEED)
    designs = len(plan.split_of_design)
    if designs < self.builder_config.min_designs:
      raise ValueError(
          f"font_chars/{self.builder_config.name}: {designs} font designs"
          f" under {', '.join(roots)}, fewer than the"
          f" {self.builder_config.min_designs} it needs. "
          + self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    self.info.metadata.update(self._metadata(plan, roots))
    return {split: self._generate_examples(plan, split, count)
            for split, count in self.builder_config.per_class.items()}

  def _metadata(self, plan: FontPlan, roots: Sequence[str]) -> dict:
    paths = sorted({f.path for f in plan.faces})
    packages = debian_packages(paths)
    hashes = {p: sha256_of(p) for p in paths}
    return {
        "classes": glyphs.CLASSES, "seed": self.SEED, "roots": list(roots),
        "design_threshold": DESIGN_THRESHOLD,
        "render": dataclasses.asdict(glyphs.RenderOptions()),
        "pillow": PIL.__version__,
        "freetype": pil_features.version("freetype2"),
        "designs": {split: len(plan.designs(split)) for split in SPLITS},
        "faces": [{"path": f.path, "index": f.index, "family": f.family,
                   "style": f.style, "design": int(d),
                   "split": plan.split_of_design[int(d)],
                   "sha256": hashes[f.path],
                   "package": packages.get(f.path, ("", ""))[0],
                   "version": packages.get(f.path, ("", ""))[1]}
                  for f, d in zip(plan.faces, plan.design)],
        "rejected": [{"path": f.path, "index": f.index, "family": f.family,
                      "reason": reason} for f, reason in plan.rejected],
        "unreadable": plan.unreadable,
    }

  def _generate_examples(self, plan: FontPlan, split: str,
                         per_class: int) -> Iterator:
    split_index = SPLITS.index(split)
    masks, current = None, None
    for face, c, k in draws(plan, split, per_class, self.SEED,
                            len(glyphs.CLASSES)):
      if face != current:  # draws are sorted by face: draw each font once
        masks = glyphs.glyph_masks(plan.faces[face], glyphs.CLASSES)
        current = face
      rng = np.random.default_rng([self.SEED, split_index, c, k, 1])
      image = glyphs.render(masks[c], rng)
      yield f"{c:03d}_{k:05d}", {"image": builders.png(image), "label": c,
                                 "face": face}
