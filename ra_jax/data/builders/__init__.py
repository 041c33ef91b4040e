"""TFDS builders of our own: datasets the TFDS catalogue lacks (Tiny
ImageNet, font_chars) or cannot build offline (Fashion-MNIST from Debian's
files)."""

import io

import numpy as np
from PIL import Image


def png(image: np.ndarray) -> bytes:
  """A uint8 (H, W) or (H, W, 3) image as PNG bytes: what our builders
  feed `tfds.features.Image` (numpy arrays there would need TensorFlow)."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()
