"""Query images in, result images out: the one decoder of query files (the
search command and the web page read uploads with the same rules) and the
one renderer of image tiles (the search command's PNG grid, the page's
thumbnails, the report's example queries).
"""

import base64
import io
import warnings
from typing import Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from ra_jax import files
from ra_jax.data import as_hwc

# Decoded, a 50-megapixel RGB image takes 150 MB; larger files are refused
# before any pixel is decoded (a PNG of a few hundred KB can declare
# 20,000 x 20,000 pixels).
MAX_PIXELS = 50_000_000
TILE = 96  # pixels per side of a tile
CAPTION = 14  # pixels of caption above each row of tiles


class ImageError(ValueError):
  """A query image that cannot be used; `status` is the HTTP status the
  page answers with (400, or 413 for one over the size limits)."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


def decode_image(source: Union[str, bytes], channels: int, *,
                 max_pixels: int = MAX_PIXELS,
                 name: Optional[str] = None) -> np.ndarray:
  """An image file (a path, local or gs://, or its bytes) as uint8
  (H, W, channels): converted to grayscale ("L") for a 1-channel model and
  to "RGB" for a 3-channel one (a grayscale image's value repeated, a
  palette or alpha image flattened). Files over `max_pixels` pixels are
  refused from their header, before decoding. `name` (default: the path)
  is what errors call the image."""
  name = name or (source if isinstance(source, str) else "the image")
  try:
    if isinstance(source, str):
      with files.open_file(source, "rb") as raw:
        data = raw.read()
    else:
      data = source
    with warnings.catch_warnings():
      # PIL warns above its own limit; ours is checked below.
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if width * height > max_pixels:
          raise ImageError(
              f"{name}: {width} x {height} pixels; at most {max_pixels:,}"
              " pixels are accepted", 413)
        array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
  except Image.DecompressionBombError as error:
    raise ImageError(f"{name}: {error}", 413) from error
  except UnidentifiedImageError as error:
    raise ImageError(f"{name}: not an image file PIL can read") from error
  except ImageError:
    raise
  except (OSError, ValueError, SyntaxError) as error:  # truncated, damaged
    raise ImageError(f"{name}: not a readable image ({error})") from error
  return as_hwc(array)


def tile(image: np.ndarray, size: int = TILE) -> Image.Image:
  """An image (H, W, C) or (H, W), any channels, as an RGB size x size tile
  (nearest-neighbour, so small images stay sharp)."""
  image = as_hwc(image).astype(np.uint8)
  pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  return pil.convert("RGB").resize((size, size), Image.NEAREST)


def data_url(image: np.ndarray, size: int = TILE) -> str:
  """A PNG data: URL of `tile(image, size)` (the page's thumbnails)."""
  out = io.BytesIO()
  tile(image, size).save(out, format="PNG")
  return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def render_rows(rows: Sequence[Sequence[tuple[np.ndarray, str, str]]],
                size: int = TILE) -> Image.Image:
  """Rows of captioned tiles, left-aligned: each row a sequence of (image,
  caption, caption colour) — e.g. a query, then its neighbours in green
  (same class) or red."""
  width = max(len(row) for row in rows)
  grid = Image.new("RGB", (size * width, (size + CAPTION) * len(rows)),
                   "white")
  draw = ImageDraw.Draw(grid)
  for r, row in enumerate(rows):
    top = r * (size + CAPTION)
    for c, (image, caption, colour) in enumerate(row):
      grid.paste(tile(image, size), (c * size, top + CAPTION))
      draw.text((c * size + 2, top + 1), caption[:16], fill=colour)
  return grid


def write_png(path: str, image: Image.Image) -> None:
  """`image` as a PNG file, written atomically."""
  with files.atomic_write(path, "wb") as f:
    image.save(f, format="PNG")
