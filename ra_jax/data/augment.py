"""Per-image preprocessing on the host (NumPy/PIL): training augmentation and
the deterministic evaluation transform (each dataset's preset is in
`datasets.DATASETS`).

Every function maps a uint8 image (H, W, C) to float32 (S, S, C) normalised
by the preset's mean and std; random ones draw from the `np.random.Generator`
grain hands to `random_map`, so augmentation is reproducible per example and
epoch.
"""

import dataclasses
import math
from typing import Literal

import numpy as np
from PIL import Image

from ra_jax.data.source import as_hwc

Kind = Literal["crop_flip", "resized_crop", "none"]


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """How images of one dataset are prepared.

  Attributes:
    image_size: side S of the square model input.
    train: "crop_flip" (pad by `padding`, random S x S crop; CIFAR-style),
      "resized_crop" (random area/aspect crop resized to S; ImageNet-style)
      or "none".
    padding: zero padding for crop_flip.
    flip: random horizontal flips (off for digits and house numbers).
    mean, std: per-channel normalisation of [0, 1] pixels.
  """
  image_size: int
  train: Kind = "crop_flip"
  padding: int = 4
  flip: bool = True
  mean: tuple[float, ...] = (0.5,)
  std: tuple[float, ...] = (0.5,)


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  if image.shape[:2] == (height, width):
    return image
  channels = image.shape[2]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((width, height), Image.BILINEAR))
  return out[..., None] if channels == 1 else out


def _normalize(image: np.ndarray, config: AugmentConfig) -> np.ndarray:
  mean = np.asarray(config.mean, np.float32)
  std = np.asarray(config.std, np.float32)
  return (image.astype(np.float32) / 255.0 - mean) / std


def eval_shorter_side(config: AugmentConfig) -> int:
  """The length `eval_transform` resizes an image's shorter side to before
  its central S x S crop: S, or S x 8/7 for resized_crop presets."""
  size = config.image_size
  return size * 8 // 7 if config.train == "resized_crop" else size


def eval_transform(image: np.ndarray, config: AugmentConfig) -> np.ndarray:
  """Resize the shorter side to `eval_shorter_side` and center-crop."""
  image = as_hwc(image)
  size = config.image_size
  height, width = image.shape[:2]
  if (height, width) != (size, size):
    scale = eval_shorter_side(config) / min(height, width)
    image = _resize(image, max(size, round(height * scale)),
                    max(size, round(width * scale)))
    top = (image.shape[0] - size) // 2
    left = (image.shape[1] - size) // 2
    image = image[top:top + size, left:left + size]
  return _normalize(image, config)


def train_transform(image: np.ndarray, config: AugmentConfig,
                    rng: np.random.Generator) -> np.ndarray:
  """The preset's random augmentation, then normalisation."""
  image = as_hwc(image)
  size = config.image_size
  if config.train == "resized_crop":
    image = _random_resized_crop(image, size, rng)
  elif config.train == "crop_flip":
    if image.shape[:2] != (size, size):
      image = _resize(image, size, size)
    pad = config.padding
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    top, left = rng.integers(0, 2 * pad + 1, size=2)
    image = padded[top:top + size, left:left + size]
  elif image.shape[:2] != (size, size):
    image = _resize(image, size, size)
  if config.flip and rng.random() < 0.5:
    image = image[:, ::-1]
  return _normalize(image, config)


def _random_resized_crop(image, size, rng, scale=(0.08, 1.0),
                         ratio=(3 / 4, 4 / 3)):
  """Inception-style crop: random area fraction and aspect ratio (10 tries,
  then the central crop), resized to size x size."""
  height, width = image.shape[:2]
  area = height * width
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return _resize(image[top:top + h, left:left + w], size, size)
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  return _resize(image[top:top + side, left:left + side], size, size)
