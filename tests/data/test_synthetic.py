"""The synthetic many-class set: made from its seed alone, the splits it
promises, classes that can be told apart, and bad sizes named."""

import numpy as np
import pytest

from ra_jax import data
from ra_jax.data import catalog


def test_same_seed_same_images_and_the_promised_splits():
  source = data.get_source("synthetic_classes", num_classes=500, queries=50)
  again = catalog.synthetic_source(num_classes=500, queries=50)
  train, test = source.splits["train"], source.splits["test"]
  np.testing.assert_array_equal(train.images, again.splits["train"].images)
  assert train.images.shape == (2000, 8, 8, 1) and train.images.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(train.labels), np.full(500, 4))
  # one query from each of 50 evenly spaced classes, first and last included
  assert len(test.labels) == 50 and len(set(test.labels)) == 50
  assert test.labels[0] == 0 and test.labels[-1] == 499
  assert source.num_classes == 500
  assert (source.query_split, source.database_split) == ("test", "train")
  other = catalog.synthetic_source(num_classes=500, queries=50, seed=1)
  assert not np.array_equal(other.splits["train"].images, train.images)


def test_classes_are_learnable():
  # The nearest class mean of the raw pixels already names almost every
  # query: the noise is small against the distance between patterns.
  source = catalog.synthetic_source(num_classes=2000, queries=500)
  train, test = source.splits["train"], source.splits["test"]
  flat = train.images.reshape(len(train.labels), -1).astype(np.float64)
  means = np.stack([flat[train.labels == c].mean(0) for c in range(2000)])
  queries = test.images.reshape(len(test.labels), -1).astype(np.float64)
  distances = ((queries[:, None] - means[None]) ** 2).sum(-1)
  assert np.mean(distances.argmin(1) == test.labels) > 0.99


def test_bad_sizes_are_named():
  with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
    catalog.synthetic_source(num_classes=1)
  with pytest.raises(ValueError, match="train_per_class must be >= 1"):
    catalog.synthetic_source(num_classes=10, train_per_class=0)
  with pytest.raises(ValueError, match=r"dataset.num_classes=10: only a"
                     " synthetic dataset"):
    data.source_options("fashion_mnist", num_classes=10)
  assert data.source_options("synthetic_classes", num_classes=10) == {
      "num_classes": 10}
