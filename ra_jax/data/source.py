"""What every dataset source provides: random-access splits and metadata.

A split is any object with `__len__` and `__getitem__(i) -> {"image": uint8
(H, W, C), "label": int}` — a `tfds.data_source`, an in-memory array pair, an
image folder — so grain pipelines treat them alike.
"""

import dataclasses
from typing import Any, Mapping, Optional, Protocol, Sequence

import numpy as np


class RandomAccessSplit(Protocol):

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> Mapping[str, Any]:
    ...


@dataclasses.dataclass(frozen=True)
class DatasetSource:
  """A dataset's splits plus what training and retrieval need to know.

  Attributes:
    name: the dataset's name (e.g. "cifar100").
    class_names: one name per class id.
    image_shape: (H, W, C) of the stored images (None when sizes vary).
    splits: split name -> random-access records {"image", "label"}.
    train_split: the split to train on.
    query_split: retrieval queries (default: the test/validation split).
    database_split: the retrieval database (default: the train split).
    fingerprint: what the images are, as a hash: two sources with the same
      fingerprint hold the same images and labels ("" when unknown). For
      TFDS sets, the build's name, version, split sizes and metadata (our
      builders record there what pins the content, e.g. every font's hash).
    metadata: what the build recorded about its content (e.g. font_chars's
      fonts with package, version and hash); empty when nothing is known.
  """
  name: str
  class_names: Sequence[str]
  image_shape: Optional[tuple[int, int, int]]
  splits: Mapping[str, RandomAccessSplit]
  train_split: str = "train"
  query_split: str = "test"
  database_split: str = "train"
  fingerprint: str = ""
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for role in ("train_split", "query_split", "database_split"):
      split = getattr(self, role)
      if split not in self.splits:
        raise ValueError(f"dataset {self.name!r}: {role} {split!r} is not one"
                         f" of its splits {sorted(self.splits)}")

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def split_sizes(self) -> dict[str, int]:
    return {name: len(split) for name, split in self.splits.items()}

  def with_protocol(self, *, query_split: Optional[str] = None,
                    database_split: Optional[str] = None) -> "DatasetSource":
    """The same source with another query/database split choice."""
    return dataclasses.replace(
        self, query_split=query_split or self.query_split,
        database_split=database_split or self.database_split)

  def describe(self) -> dict[str, Any]:
    """A JSON-friendly summary, for logs and the work dir."""
    return {
        "name": self.name, "num_classes": self.num_classes,
        "class_names": list(self.class_names),
        "image_shape": list(self.image_shape) if self.image_shape else None,
        "split_sizes": self.split_sizes, "train_split": self.train_split,
        "query_split": self.query_split,
        "database_split": self.database_split,
        "fingerprint": self.fingerprint,
    }


class ArraySplit:
  """A split held in memory: images (N, H, W, C) uint8, labels (N,) ints."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    if images.ndim != 4 or len(images) != len(labels):
      raise ValueError(f"images must be (N, H, W, C) with one label each, got"
                       f" {images.shape} and {np.shape(labels)}")
    self.images = np.asarray(images, np.uint8)
    self.labels = np.asarray(labels, np.int64)

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {"image": self.images[index], "label": int(self.labels[index])}


def as_hwc(image) -> np.ndarray:
  """A record's image as an (H, W, C) array: a 2-D grayscale image gets its
  channel axis (TFDS and PIL give 2-D arrays for one channel)."""
  image = np.asarray(image)
  return image[..., None] if image.ndim == 2 else image


def split_labels(split: RandomAccessSplit) -> np.ndarray:
  """All labels of a split (N,), reading only labels where the split can."""
  if isinstance(split, ArraySplit):
    return split.labels
  labels = getattr(split, "labels", None)
  if labels is not None:
    return np.asarray(labels)
  return np.asarray([int(split[i]["label"]) for i in range(len(split))])
