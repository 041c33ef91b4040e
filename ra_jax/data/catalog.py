"""Dataset sources by name: TFDS catalogue datasets, our own TFDS builders,
scikit-learn's digits and user image folders.

  get_source("cifar100", data_dir=...)      # TFDS catalogue, array_record
  get_source("fashion_mnist")               # offline, from Debian's IDX files
  get_source("tiny_imagenet", manual_dir=)  # our builder, official zip
  get_source("digits")                      # bundled with scikit-learn
  get_source("folder", root="/path/to/images")
"""

from typing import Optional

import numpy as np

from ra_jax.data.source import ArraySplit
from ra_jax.data.source import DatasetSource

# The split used for retrieval queries (the database is the train split).
QUERY_SPLIT = {
    "cifar100": "test", "cifar10": "test", "food101": "validation",
    "svhn_cropped": "test", "fashion_mnist": "test", "mnist": "test",
    "tiny_imagenet": "validation", "digits": "test",
}
_OWN_BUILDERS = ("fashion_mnist", "tiny_imagenet")


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


def _own_builder(name: str, data_dir: Optional[str],
                 manual_dir: Optional[str]):
  """Our builder for `name`, prepared (built once, atomically) if needed."""
  import tensorflow_datasets as tfds
  if name == "fashion_mnist":
    from ra_jax.data.builders import fashion_mnist_idx as module
    builder_cls = module.FashionMnistIdx
    manual_dir = manual_dir or module.DEBIAN_DIR
  else:
    from ra_jax.data.builders import tiny_imagenet as module
    builder_cls = module.TinyImagenet
  builder = builder_cls(data_dir=data_dir, file_format="array_record")
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

  `own_builder` (fashion_mnist, tiny_imagenet): build with ra_jax's builder
  from local files. Default: always for tiny_imagenet (not in the catalogue);
  for fashion_mnist, the catalogue's data when it is already prepared in
  `data_dir`, else ours from Debian's IDX files (no network needed).
  """
  import tensorflow_datasets as tfds
  if own_builder is None and name in _OWN_BUILDERS:
    own_builder = name == "tiny_imagenet" or not tfds.builder(
        name, data_dir=data_dir).is_prepared()
  if own_builder:
    if name not in _OWN_BUILDERS:
      raise ValueError(f"ra_jax has no builder of its own for {name!r}; it"
                       f" has: {', '.join(_OWN_BUILDERS)}")
    builder = _own_builder(name, data_dir, manual_dir)
  else:
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise ValueError(f"unknown dataset {name!r}: not in the TFDS catalogue"
                       " (and not one of digits, folder,"
                       f" {', '.join(_OWN_BUILDERS)})") from e
  info = builder.info
  split_names = list(info.splits) or ["train", QUERY_SPLIT.get(name, "test")]
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
  query = query_split or QUERY_SPLIT.get(name, "test")
  return DatasetSource(name=name, class_names=list(names), image_shape=shape,
                       splits=splits, query_split=query,
                       database_split=database_split)


def get_source(name: str, **kwargs) -> DatasetSource:
  """The source called `name`: "digits", "folder" (root=...), or TFDS."""
  if name == "digits":
    return digits_source(**kwargs)
  if name == "folder":
    from ra_jax.data.folder import folder_source
    return folder_source(**kwargs)
  return tfds_source(name, **kwargs)
