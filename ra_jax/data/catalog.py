"""Dataset sources by name: TFDS catalogue datasets, our own TFDS builders,
scikit-learn's digits and user image folders.

  get_source("cifar100", data_dir=...)      # TFDS catalogue, array_record
  get_source("fashion_mnist")               # offline, from Debian's IDX files
  get_source("tiny_imagenet", manual_dir=)  # our builder, official zip
  get_source("font_chars[/small]")          # our builder, installed fonts
  get_source("digits")                      # bundled with scikit-learn
  get_source("folder", root="/path/to/images")
  get_source("synthetic_classes")         # 100,000 classes from a seed
"""

import hashlib
import json
from typing import Optional

import numpy as np

from ra_jax.data import datasets
from ra_jax.data.source import ArraySplit
from ra_jax.data.source import DatasetSource
from ra_jax.data.splits import evenly_spaced


def digits_source(test_fraction: float = 0.25, seed: int = 0) -> DatasetSource:
  """scikit-learn's 1,797 real 8x8 digits (no download), stratified split."""
  from sklearn import datasets, model_selection
  digits = datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  train_idx, test_idx = model_selection.train_test_split(
      np.arange(len(images)), test_size=test_fraction, random_state=seed,
      stratify=digits.target)
  return DatasetSource(
      name="digits", class_names=[str(i) for i in range(10)],
      image_shape=(8, 8, 1),
      splits={"train": ArraySplit(images[train_idx], digits.target[train_idx]),
              "test": ArraySplit(images[test_idx], digits.target[test_idx])},
      query_split="test", database_split="train")


def synthetic_source(num_classes: int = 100_000, train_per_class: int = 4,
                     queries: int = 10_000, image_size: int = 8,
                     noise: float = 24.0, seed: int = 0) -> DatasetSource:
  """Many classes, made from a seed (no files): each class is a random
  (S, S, 1) uint8 pattern, its images that pattern plus Gaussian pixel
  noise of `noise` grey levels. Patterns are far apart (about 75 grey
  levels per pixel) compared with the noise, so the classes are learnable,
  and there are as many as asked for: the set for training at 100,000
  classes on any machine.

  "train" holds `train_per_class` images of every class (the database),
  "test" one image of each of `queries` evenly spaced classes (the
  queries; all classes when `queries` >= num_classes). 100,000 classes of
  4 8 x 8 images are 26 MB."""
  for field, value, least in (("num_classes", num_classes, 2),
                              ("train_per_class", train_per_class, 1),
                              ("queries", queries, 1),
                              ("image_size", image_size, 1)):
    if value < least:
      raise ValueError(f"synthetic_classes: {field} must be >= {least}, got"
                       f" {value}")
  rng = np.random.default_rng(seed)
  patterns = rng.integers(0, 256, (num_classes, image_size, image_size, 1),
                          dtype=np.uint8)

  def split(labels: np.ndarray) -> ArraySplit:
    shaken = patterns[labels] + rng.normal(0.0, noise, (len(labels),
                                                        *patterns.shape[1:]))
    return ArraySplit(np.clip(np.rint(shaken), 0, 255).astype(np.uint8),
                      labels)

  return DatasetSource(
      name="synthetic_classes",
      class_names=[f"class {i}" for i in range(num_classes)],
      image_shape=(image_size, image_size, 1),
      splits={"train": split(np.repeat(np.arange(num_classes),
                                       train_per_class)),
              "test": split(evenly_spaced(num_classes,
                                          min(queries, num_classes)))},
      query_split="test", database_split="train")


def _own_builder(name: str, data_dir: Optional[str],
                 manual_dir: Optional[str]):
  """Our builder for `name`, prepared (built once, atomically) if needed."""
  import importlib
  import tensorflow_datasets as tfds
  entry = datasets.info(name)
  module, _, class_name = entry.builder.partition(":")
  builder_cls = getattr(importlib.import_module(
      f"ra_jax.data.builders.{module}"), class_name)
  manual_dir = manual_dir or entry.manual_dir
  _, _, config = name.partition("/")
  if config and config not in builder_cls.builder_configs:
    raise ValueError(f"dataset {name!r}: {name.split('/')[0]} has the"
                     f" configs {', '.join(builder_cls.builder_configs)}")
  builder = builder_cls(data_dir=data_dir, file_format="array_record",
                        **({"config": config} if config else {}))
  if not builder.is_prepared():
    if manual_dir is None:
      raise FileNotFoundError(
          f"dataset {name!r} is not prepared in {builder.data_dir} and no"
          f" manual_dir was given. {builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    # TFDS writes into a temporary directory and renames it when complete,
    # so a failed build leaves nothing half-written behind.
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def tfds_source(name: str, *, data_dir: Optional[str] = None,
                manual_dir: Optional[str] = None,
                query_split: Optional[str] = None,
                database_split: str = "train",
                own_builder: Optional[bool] = None) -> DatasetSource:
  """A TFDS dataset read with `tfds.data_source` (array_record, no TF).

  `own_builder`: build with ra_jax's builder from local files (datasets
  with one: `datasets.own_builders()`). Default: the table's choice —
  always for tiny_imagenet (not in the catalogue); for fashion_mnist, the
  catalogue's data when it is already prepared in `data_dir`, else ours
  from Debian's IDX files (no network needed).
  """
  import tensorflow_datasets as tfds
  entry = datasets.info(name)
  if own_builder is None and entry.own_builder:
    own_builder = entry.own_builder == "always" or not tfds.builder(
        name, data_dir=data_dir).is_prepared()
  if own_builder:
    if not entry.own_builder:
      raise ValueError(f"ra_jax has no builder of its own for {name!r}; it"
                       f" has: {', '.join(datasets.own_builders())}")
    builder = _own_builder(name, data_dir, manual_dir)
  else:
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise ValueError(f"unknown dataset {name!r}: not in the TFDS catalogue"
                       " (and not one of"
                       f" {', '.join(datasets.DATASETS)})") from e
  info = builder.info
  split_names = list(info.splits) or ["train", entry.query_split]
  try:
    splits = {split: builder.as_data_source(split) if own_builder else
              tfds.data_source(name, split=split, data_dir=data_dir,
                               download=False)  # never implicitly
              for split in split_names}
  except (FileNotFoundError, AssertionError, ValueError,
          NotImplementedError) as e:  # NotImplementedError: not array_record
    raise FileNotFoundError(
        f"dataset {name!r} is not prepared in {builder.data_dir} (as"
        " array_record, which random access needs). Build it"
        " once where the data is reachable (`tfds build"
        f" {name} --file_format=array_record`) and point dataset.data_dir"
        " at it; catalogue builders that encode images need TensorFlow: pip"
        " install '.[prepare]'") from e
  label = info.features["label"]
  image = info.features["image"]
  shape = tuple(image.shape) if None not in image.shape else None
  names = label.names if label.names else [str(i) for i in
                                           range(label.num_classes)]
  query = query_split or entry.query_split
  # as read back from a prepared build (tuples become lists), built or not
  metadata = json.loads(json.dumps(dict(info.metadata or {}), default=str))
  return DatasetSource(name=name, class_names=list(names), image_shape=shape,
                       splits=splits, query_split=query,
                       database_split=database_split,
                       fingerprint=tfds_fingerprint(
                           info.full_name, {s: len(splits[s]) for s in splits},
                           metadata),
                       metadata=metadata)


def tfds_fingerprint(full_name: str, split_sizes: dict[str, int],
                     metadata: dict) -> str:
  """16 hex digits of the SHA-256 of a TFDS build's name and version
  (`full_name`, e.g. "font_chars/full/1.0.0"), split sizes and metadata.
  The builders are deterministic, so for ours this pins the images: the
  Fashion-MNIST builder checks its files' hashes, and font_chars records
  every font's hash, package version and the renderer's versions in the
  metadata."""
  content = json.dumps({"name": full_name, "splits": split_sizes,
                        "metadata": metadata}, sort_keys=True, default=str)
  return hashlib.sha256(content.encode()).hexdigest()[:16]


def get_source(name: str, **kwargs) -> DatasetSource:
  """The source called `name`: "digits", "folder" (root=...), or TFDS
  (`datasets.DATASETS` says which)."""
  loader = datasets.info(name).loader
  if loader == "digits":
    return digits_source(**kwargs)
  if loader == "folder":
    from ra_jax.data.folder import folder_source
    return folder_source(**kwargs)
  if loader == "synthetic":
    return synthetic_source(**kwargs)
  return tfds_source(name, **kwargs)


def source_options(name: str, *, data_dir: str = "", manual_dir: str = "",
                   builder: str = "auto", num_classes: int = 0) -> dict:
  """`get_source` keyword arguments from a run's dataset config fields,
  for the loaders that take them. `builder`: "auto", "catalogue" or "own"
  (a TFDS dataset with a builder of ours); `num_classes` > 0: the classes
  of a synthetic set (0: its default)."""
  if builder not in ("auto", "catalogue", "own"):
    raise ValueError(f"dataset.builder must be auto, catalogue or own, got"
                     f" {builder!r}")
  loader = datasets.info(name).loader
  if num_classes and loader != "synthetic":
    raise ValueError(f"dataset.num_classes={num_classes}: only a synthetic"
                     f" dataset is made with a chosen number of classes;"
                     f" {name!r} has its own (leave it 0)")
  if loader == "synthetic":
    return {"num_classes": num_classes} if num_classes else {}
  if loader != "tfds":
    return {}
  options = {"data_dir": data_dir or None, "manual_dir": manual_dir or None}
  if builder != "auto":
    options["own_builder"] = builder == "own"
  return {k: v for k, v in options.items() if v is not None}
