"""Fashion-MNIST built from local IDX files, with no network.

Debian's `dataset-fashion-mnist` package installs the real 70,000 images as
the four IDX `.gz` files that TFDS's own `fashion_mnist` builder downloads,
but recompressed: TFDS's checksums of the `.gz` files fail although the
images are identical. This builder therefore verifies the *decompressed*
content (SHA-256 of the IDX bytes published by Zalando) and writes the same
features as TFDS's `fashion_mnist` (28x28x1 PNG images, 10 named classes).
"""

import gzip
import hashlib
import os

import numpy as np
import tensorflow_datasets as tfds

from ra_jax.data import builders
from ra_jax.data.datasets import DATASETS

DEBIAN_DIR = DATASETS["fashion_mnist"].manual_dir
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# file -> SHA-256 of its decompressed IDX content
FILES = {
    "train-images-idx3-ubyte.gz":
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz":
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz":
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz":
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def read_idx(path: str, expected_sha256: str | None = None) -> np.ndarray:
  """An IDX file (gzipped or not) as a uint8 array of its declared shape."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  if expected_sha256 is not None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
      raise ValueError(f"{path}: decompressed content has SHA-256 {digest},"
                       f" expected {expected_sha256}: not the Fashion-MNIST"
                       " file of that name")
  if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
    raise ValueError(f"{path}: not an unsigned-byte IDX file")
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big")
                for i in range(ndim))
  array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise ValueError(f"{path}: header declares {shape}, data has"
                     f" {array.size} bytes")
  return array.reshape(shape)


class FashionMnistIdx(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017) from local IDX files."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the four Fashion-MNIST IDX .gz files in the manual dir, or install"
      f" them with `apt-get install dataset-fashion-mnist` ({DEBIAN_DIR}).")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(28, 28, 1)),
            "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
        }),
        supervised_keys=("image", "label"),
        homepage="https://github.com/zalandoresearch/fashion-mnist")

  def _split_generators(self, dl_manager):
    directory = os.fspath(dl_manager.manual_dir)
    missing = [f for f in FILES if not os.path.exists(os.path.join(
        directory, f))]
    if missing:
      raise FileNotFoundError(f"{directory}: missing {', '.join(missing)}. "
                              + self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    return {
        "train": self._generate_examples(directory, "train"),
        "test": self._generate_examples(directory, "t10k"),
    }

  def _generate_examples(self, directory, prefix):
    images = read_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"),
                      FILES[f"{prefix}-images-idx3-ubyte.gz"])
    labels = read_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"),
                      FILES[f"{prefix}-labels-idx1-ubyte.gz"])
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {"image": builders.png(image), "label": int(label)}
