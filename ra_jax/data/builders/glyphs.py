"""Characters rendered from font files: which fonts can render a class set,
which of them are one design, and one rendered training image.

The `font_chars` builder's machinery, kept apart from TFDS so that each
rule is testable on its own:

  faces = find_faces(["/usr/share/fonts"], CLASSES)   # cmap covers all
  masks = glyph_masks(faces[0], CLASSES)               # ink, 64 px em
  reason = check_face(masks, CLASSES)                  # None: usable
  image = render(masks[0], np.random.default_rng(0))   # (32, 32, 3) uint8
"""

import dataclasses
import logging
import os
import re
from typing import Iterable, Optional, Sequence

import numpy as np
from fontTools import ttLib
from PIL import Image
from PIL import ImageFont

# 100 characters that no two usual font designs confuse once a glyph is
# scaled to fit the image and turned a little: letters and digits without
# the pairs that differ only in size (c/C, o/O, s/S, v/V, w/W, x/X, z/Z,
# p/P, u/U), without 0 (O) and the one-stroke l and |, ASCII symbols
# without the small marks (. , ' ` - _), and Latin-1 (cp1252) signs, which
# about 40 % of the Latin fonts Debian ships cover. `check_face` rejects a
# font in which any two of them still render alike.
CLASSES = ("ABCDEFGHIJKLMNOPQRSTUVWXYZ" "abdefghijkmnqrty" "123456789"
           "!\"#$%&()*+/<=>?@[\\]^{}~:;"
           "ÆæÑßÇØÞþðœŒ¿»¶±©§®«¢£¥÷¬")
FONT_SUFFIXES = (".ttf", ".otf", ".ttc")
EM_PIXELS = 64  # glyphs are drawn at this size, then scaled down
THUMB_SIDE = 24  # side of the fitted glyphs `check_face` compares
ALIKE_IOU = 0.9  # two classes closer than this in one font: not usable


@dataclasses.dataclass(frozen=True)
class Face:
  """One face of a font file (a .ttc holds several)."""
  path: str
  index: int
  family: str
  style: str


def font_files(roots: Iterable[str]) -> list[str]:
  """Every .ttf/.otf/.ttc under `roots`, sorted, symbolic links resolved
  and repeated files (the same real path) listed once. Linked folders are
  not entered (no cycles); linked files are read."""
  found = set()
  for root in roots:
    for folder, _, names in os.walk(root):
      found.update(os.path.realpath(os.path.join(folder, name))
                   for name in names if name.lower().endswith(FONT_SUFFIXES))
  return sorted(found)


def find_faces(roots: Iterable[str], chars: str
               ) -> tuple[list[Face], dict[str, str]]:
  """The faces under `roots` whose character map covers every one of
  `chars`, and {path: why} for the files none of whose faces could be
  read. Symbol-encoded fonts (pictures at letter code points) are left
  out, as are faces without a family name."""
  # fontTools warns of every quirk it repairs (thousands across Debian's
  # fonts) while the files are read; a file it cannot read is reported in
  # `unreadable` instead. Its level is restored afterwards.
  logger = logging.getLogger("fontTools")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    return _read_faces(font_files(roots), {ord(c) for c in chars})
  finally:
    logger.setLevel(level)


def _read_faces(paths: Sequence[str], needed: set[int]
                ) -> tuple[list[Face], dict[str, str]]:
  faces, unreadable = [], {}
  for path in paths:
    try:
      fonts = (ttLib.TTCollection(path, lazy=True).fonts
               if path.lower().endswith(".ttc")
               else [ttLib.TTFont(path, lazy=True)])
      for index, font in enumerate(fonts):
        tables = font["cmap"].tables
        if any(t.platformID == 3 and t.platEncID == 0 for t in tables):
          continue  # symbol encoding
        if not needed <= set(font.getBestCmap() or {}):
          continue
        names = font["name"]
        family = names.getDebugName(16) or names.getDebugName(1)
        style = names.getDebugName(17) or names.getDebugName(2) or ""
        if family:
          faces.append(Face(path, index, family.strip(), style.strip()))
    except Exception as e:  # fontTools raises many kinds on broken files
      unreadable[path] = f"{type(e).__name__}: {e}"
  return faces, unreadable


def glyph_masks(face: Face, chars: str,
                em_pixels: int = EM_PIXELS) -> list[Optional[np.ndarray]]:
  """Each character's ink as a uint8 (h, w) coverage mask cropped to the
  ink, drawn at `em_pixels`; None where the glyph has no ink."""
  font = ImageFont.truetype(face.path, em_pixels, index=face.index)
  masks = []
  for char in chars:
    core = font.getmask(char, mode="L")
    mask = np.asarray(core, np.uint8).reshape(core.size[1], core.size[0])
    masks.append(_crop(mask))
  return masks


def _crop(mask: np.ndarray) -> Optional[np.ndarray]:
  rows, cols = np.nonzero(mask > 8)  # ignore faint anti-aliasing haze
  if not len(rows):
    return None
  return mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def thumbnail(mask: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
  """`mask` scaled to fit a (side, side) square, centred: float32 in
  [0, 1]. Size and place no longer tell glyphs apart, as in `render`."""
  height, width = mask.shape
  scale = side / max(height, width)
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  small = np.asarray(Image.fromarray(mask).resize(size, Image.BILINEAR),
                     np.float32) / 255.0
  out = np.zeros((side, side), np.float32)
  top, left = (side - size[1]) // 2, (side - size[0]) // 2
  out[top:top + size[1], left:left + size[0]] = small
  return out


def thumbnails(masks: Sequence[np.ndarray]) -> np.ndarray:
  """(C, THUMB_SIDE**2) float32: each mask's `thumbnail`, flattened."""
  return np.stack([thumbnail(m).ravel() for m in masks])


def soft_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """sum(min(a, b)) / sum(max(a, b)) over the last axis, broadcast."""
  return np.minimum(a, b).sum(-1) / np.maximum(
      np.maximum(a, b).sum(-1), 1e-6)


def check_face(masks: Sequence[Optional[np.ndarray]], chars: str,
               alike: float = ALIKE_IOU) -> Optional[str]:
  """Why a face cannot render the class set, or None when it can: a
  glyph without ink, or two classes whose fitted glyphs overlap more than
  `alike` (an all-capitals font's a and A, one placeholder drawn for two
  missing glyphs, a Japanese font's yen sign at the backslash)."""
  empty = [c for c, m in zip(chars, masks) if m is None]
  if empty:
    return f"no ink for {''.join(empty)!r}"
  thumbs = thumbnails(masks)
  iou = soft_iou(thumbs[:, None], thumbs[None])
  iou[np.tril_indices(len(chars))] = 0.0
  i, j = np.unravel_index(np.argmax(iou), iou.shape)
  if iou[i, j] > alike:
    return (f"{chars[i]!r} and {chars[j]!r} render alike (soft IoU"
            f" {iou[i, j]:.2f} > {alike})")
  return None


# Trailing words that name a weight, width or style of a family, not a
# design: "Iwona Cond Light" is Iwona.
STYLE_WORDS = frozenset(
    "thin hairline extralight ultralight light book regular normal medium"
    " semibold demibold demi bold extrabold ultrabold black heavy ultra"
    " ultrablack condensed cond narrow semicondensed extended expanded wide"
    " italic oblique sc smallcaps display text caption titling poster semi"
    " extra".split())


def family_stem(family: str) -> str:
  """`family` lower-cased without trailing STYLE_WORDS ("PT Sans Narrow"
  -> "pt sans"): families with one stem are weights or widths of one
  design, however unlike their glyphs look."""
  words = re.split(r"[\s_-]+", family.lower().strip())
  while len(words) > 1 and words[-1] in STYLE_WORDS:
    words.pop()
  return " ".join(words)


def design_groups(thumbs: np.ndarray, threshold: float,
                  families: Optional[Sequence[str]] = None) -> np.ndarray:
  """Group ids (F,) for F font families whose fitted glyphs `thumbs`
  (F, C, P) agree: two families whose mean per-class soft IoU exceeds
  `threshold` are one design (clones such as Arimo and Liberation Sans,
  or the dozens of Arabic fonts that share one Latin alphabet), as are
  families with one `family_stem` when `families` names them, and
  anything linked through such pairs. Groups are numbered in order of
  their first family."""
  from scipy.sparse import csgraph
  count = len(thumbs)
  linked = np.zeros((count, count), bool)
  for i in range(count):
    linked[i] = soft_iou(thumbs[i][None], thumbs).mean(-1) > threshold
  if families is not None:
    stems = np.asarray([family_stem(f) for f in families])
    linked |= stems[:, None] == stems[None, :]
  _, labels = csgraph.connected_components(linked, directed=False)
  first = {}
  return np.asarray([first.setdefault(g, len(first)) for g in labels])


@dataclasses.dataclass(frozen=True)
class RenderOptions:
  """How a glyph becomes an image.

  Attributes:
    image_size: the square image's side in pixels.
    scale: the range of the glyph's longer side, as a fraction of the side.
    max_rotation: turns are uniform in [-max_rotation, max_rotation] degrees.
    min_contrast: the least luma difference (0-1) between the glyph's
      colour and either end of the background's gradient.
    gradient: the standard deviation (0-1, per channel) of the
      background's second colour around its first.
  """
  image_size: int = 32
  scale: tuple[float, float] = (0.5, 0.9)
  max_rotation: float = 15.0
  min_contrast: float = 0.3
  gradient: float = 0.15


_LUMA = np.asarray([0.299, 0.587, 0.114])


def _colours(rng: np.random.Generator, options: RenderOptions):
  """Foreground, background start and end (3,) in [0, 1], far enough
  apart in luma."""
  while True:
    start = rng.uniform(0.0, 1.0, 3)
    end = np.clip(start + rng.normal(0.0, options.gradient, 3), 0.0, 1.0)
    fore = rng.uniform(0.0, 1.0, 3)
    if min(abs((fore - start) @ _LUMA),
           abs((fore - end) @ _LUMA)) >= options.min_contrast:
      return fore, start, end


def render(mask: np.ndarray, rng: np.random.Generator,
           options: RenderOptions = RenderOptions()) -> np.ndarray:
  """One (S, S, 3) uint8 image of the glyph `mask` (from `glyph_masks`):
  turned, scaled so its longer side spans a random fraction of S, placed
  at a random position wholly inside, in a random colour on a random
  two-colour gradient. Every draw comes from `rng`, so a seeded generator
  gives the same image on every run."""
  side = options.image_size
  angle = rng.uniform(-options.max_rotation, options.max_rotation)
  turned = _crop(np.asarray(Image.fromarray(mask).rotate(
      angle, resample=Image.BICUBIC, expand=True), np.uint8))
  if turned is None:  # a hairline that turning blurred away
    turned = mask
  height, width = turned.shape
  scale = rng.uniform(*options.scale) * side / max(height, width)
  size = (min(side, max(1, round(width * scale))),
          min(side, max(1, round(height * scale))))
  alpha = np.asarray(Image.fromarray(turned).resize(size, Image.LANCZOS),
                     np.float32)[..., None] / 255.0
  top = rng.integers(0, side - size[1] + 1)
  left = rng.integers(0, side - size[0] + 1)
  fore, start, end = _colours(rng, options)
  direction = rng.uniform(0.0, 2 * np.pi)
  ys, xs = np.mgrid[0:side, 0:side] / max(side - 1, 1)
  along = xs * np.cos(direction) + ys * np.sin(direction)
  along = (along - along.min()) / max(np.ptp(along), 1e-6)
  image = start + along[..., None] * (end - start)  # (S, S, 3)
  window = image[top:top + size[1], left:left + size[0]]
  image[top:top + size[1], left:left + size[0]] = (
      window * (1.0 - alpha) + fore * alpha)
  return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
