"""Datasets for retrieval: sources (TFDS, own builders, digits, folders) and
grain pipelines. Imports nothing from the trainer."""

from ra_jax.data.augment import AugmentConfig
from ra_jax.data.datasets import DATASETS
from ra_jax.data.datasets import DatasetInfo
from ra_jax.data.datasets import preset
from ra_jax.data.pipeline import batches
from ra_jax.data.pipeline import DEFAULT_PREFETCH_BATCHES
from ra_jax.data.pipeline import eval_dataset
from ra_jax.data.pipeline import train_dataset
from ra_jax.data.source import ArraySplit
from ra_jax.data.source import as_hwc
from ra_jax.data.source import DatasetSource
from ra_jax.data.source import split_labels
from ra_jax.data.catalog import digits_source
from ra_jax.data.catalog import get_source
from ra_jax.data.catalog import source_options
from ra_jax.data.catalog import tfds_source
from ra_jax.data.splits import evenly_spaced
from ra_jax.data.splits import few_shot_indices
from ra_jax.data.splits import in_memory
from ra_jax.data.splits import save_few_shot_indices
from ra_jax.data.splits import stratified_subset
from ra_jax.data.splits import SubsetSplit
from ra_jax.data.splits import VALIDATION_SPLIT
from ra_jax.data.splits import with_validation

__all__ = [
    "ArraySplit", "AugmentConfig", "DATASETS", "DatasetInfo", "as_hwc", "DEFAULT_PREFETCH_BATCHES", "DatasetSource",
    "SubsetSplit",
    "batches", "digits_source", "eval_dataset", "evenly_spaced",
    "few_shot_indices",
    "get_source", "in_memory", "source_options",
    "preset", "save_few_shot_indices", "split_labels", "stratified_subset",
    "tfds_source",
    "train_dataset", "VALIDATION_SPLIT", "with_validation",
]
