"""Every dataset ra_jax knows, described once: where it comes from, which
split holds the retrieval queries, which builder of ours can make it, and
how its images are prepared. `get_source` (catalog.py), `preset`, the
configs and the report read this table.

Datasets not listed are read from the TFDS catalogue with the default
entry's choices (queries = "test", ImageNet-style preprocessing at 64 px).
"""

import dataclasses
from typing import Literal, Optional

from ra_jax.data.augment import AugmentConfig

Loader = Literal["tfds", "digits", "folder", "synthetic"]

_IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """One dataset.

  Attributes:
    loader: "tfds" (the TFDS catalogue, or our builder), "digits"
      (scikit-learn's, bundled), "folder" (the user's image folders) or
      "synthetic" (many classes made from a seed, `synthetic_source`).
    query_split: the split whose images query the database (the database
      is the training split).
    augment: the preprocessing preset, with the default image size.
    own_builder: "always" (only our TFDS builder makes it),
      "unless_prepared" (ours when the catalogue's data is not prepared in
      data_dir) or None (the catalogue's only).
    builder: "module:Class" of our builder under ra_jax.data.builders.
    manual_dir: where our builder finds its files when none is given.
  """
  loader: Loader = "tfds"
  query_split: str = "test"
  augment: AugmentConfig = AugmentConfig(64, "resized_crop", 0, True,
                                         **_IMAGENET)
  own_builder: Optional[Literal["always", "unless_prepared"]] = None
  builder: Optional[str] = None
  manual_dir: Optional[str] = None


DATASETS = {
    "cifar100": DatasetInfo(augment=AugmentConfig(
        32, "crop_flip", 4, True, (0.507, 0.487, 0.441),
        (0.267, 0.256, 0.276))),
    "cifar10": DatasetInfo(augment=AugmentConfig(
        32, "crop_flip", 4, True, (0.491, 0.482, 0.447),
        (0.247, 0.243, 0.262))),
    # No flips for digits and house numbers: a mirrored 2 is no 2.
    "svhn_cropped": DatasetInfo(augment=AugmentConfig(
        32, "crop_flip", 4, False, (0.438, 0.444, 0.473),
        (0.198, 0.201, 0.197))),
    # Debian's dataset-fashion-mnist package holds the IDX files.
    "fashion_mnist": DatasetInfo(
        augment=AugmentConfig(28, "crop_flip", 2, True, (0.286,), (0.353,)),
        own_builder="unless_prepared",
        builder="fashion_mnist_idx:FashionMnistIdx",
        manual_dir="/usr/share/datasets/fashion-mnist"),
    "mnist": DatasetInfo(augment=AugmentConfig(28, "crop_flip", 2, False,
                                               (0.131,), (0.308,))),
    "food101": DatasetInfo(query_split="validation"),
    "tiny_imagenet": DatasetInfo(query_split="validation",
                                 own_builder="always",
                                 builder="tiny_imagenet:TinyImagenet"),
    "digits": DatasetInfo(loader="digits", augment=AugmentConfig(
        8, "crop_flip", 1, False, (0.3,), (0.38,))),
    "folder": DatasetInfo(loader="folder"),
    # Characters rendered from installed fonts (our builder; no flips: a
    # mirrored "b" is a "d"). Mean and std of 5,000 full-set train images.
    "font_chars": DatasetInfo(
        augment=AugmentConfig(32, "crop_flip", 2, False, (0.500, 0.499, 0.495),
                              (0.294, 0.329, 0.287)),
        own_builder="always", builder="font_chars:FontChars",
        manual_dir="/usr/share"),  # every font file under it
    # Random patterns plus noise: no crops (a shifted pattern is another).
    "synthetic_classes": DatasetInfo(loader="synthetic", augment=AugmentConfig(
        8, "none", 0, False, (0.5,), (0.29,))),
}
DEFAULT = DatasetInfo()


def info(name: str) -> DatasetInfo:
  """The table's entry for `name` (DEFAULT for other TFDS datasets); a
  TFDS builder config ("font_chars/small") has its dataset's entry."""
  return DATASETS.get(name.split("/")[0], DEFAULT)


def own_builders() -> tuple[str, ...]:
  """The datasets ra_jax has a TFDS builder of its own for."""
  return tuple(name for name, entry in DATASETS.items() if entry.own_builder)


def preset(dataset: str, **overrides) -> AugmentConfig:
  """The preprocessing preset of `dataset`, with `overrides` (e.g.
  image_size=)."""
  return dataclasses.replace(info(dataset).augment, **overrides)
