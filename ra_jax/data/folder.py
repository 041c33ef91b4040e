"""A user's own images: root/<class_name>/*.jpg|jpeg|png, or, with split
folders, root/<split>/<class_name>/*.

Everything is checked before anything is returned: an unsupported extension,
an unreadable image or an empty class folder raises an error naming it, so a
run never starts on a half-usable dataset.
"""

import os
from typing import Optional

import numpy as np
from PIL import Image

from ra_jax.data.source import DatasetSource

EXTENSIONS = (".jpg", ".jpeg", ".png")
SPLIT_NAMES = ("train", "test", "val", "validation")


class FolderSplit:
  """Image files with labels; decoded to uint8 RGB on access."""

  def __init__(self, paths: list[str], labels: np.ndarray):
    self.paths, self.labels = paths, labels

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict:
    with Image.open(self.paths[index]) as image:
      return {"image": np.asarray(image.convert("RGB")),
              "label": int(self.labels[index])}


def _scan(directory: str, class_names: Optional[list[str]]):
  found = sorted(d for d in os.listdir(directory)
                 if os.path.isdir(os.path.join(directory, d)))
  if not found:
    raise ValueError(f"{directory}: no class folders (expected"
                     " <class_name>/<image files>)")
  if class_names is not None and found != class_names:
    raise ValueError(f"{directory}: class folders {found} differ from the"
                     f" other split's {class_names}")
  paths, labels, sizes = [], [], set()
  for label, name in enumerate(found):
    class_dir = os.path.join(directory, name)
    files = sorted(os.listdir(class_dir))
    if not files:
      raise ValueError(f"{class_dir}: empty class folder")
    for file in files:
      path = os.path.join(class_dir, file)
      if not file.lower().endswith(EXTENSIONS):
        raise ValueError(f"{path}: unsupported extension (allowed:"
                         f" {', '.join(EXTENSIONS)})")
      try:
        with Image.open(path) as image:
          image.verify()
          sizes.add(image.size)
      except Exception as e:  # PIL raises many types for bad files
        raise ValueError(f"{path}: unreadable image ({e})") from e
      paths.append(path)
      labels.append(label)
  return found, FolderSplit(paths, np.asarray(labels, np.int64)), sizes


def folder_source(root: str, name: Optional[str] = None) -> DatasetSource:
  """Reads and validates an image folder; see the module docstring."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"image folder {root!r} does not exist")
  split_dirs = [s for s in SPLIT_NAMES if os.path.isdir(os.path.join(root, s))]
  class_names, splits, sizes = None, {}, set()
  for split in split_dirs or [None]:
    directory = os.path.join(root, split) if split else root
    class_names, splits[split or "train"], found_sizes = _scan(directory,
                                                               class_names)
    sizes |= found_sizes
  shape = None
  if len(sizes) == 1:
    width, height = sizes.pop()
    shape = (height, width, 3)
  query = next((s for s in ("test", "validation", "val") if s in splits),
               "train")
  return DatasetSource(name=name or os.path.basename(os.path.normpath(root)),
                       class_names=class_names, image_shape=shape,
                       splits=splits, train_split="train" if "train" in splits
                       else next(iter(splits)), query_split=query,
                       database_split="train" if "train" in splits
                       else next(iter(splits)))
