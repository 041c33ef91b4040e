"""Which records a run uses: validation hold-outs and in-memory splits."""

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from ra_jax import data
from ra_jax.data import splits


def _source(n=60, classes=3):
  images = (np.arange(n, dtype=np.uint8)[:, None, None, None] *
            np.ones((1, 2, 2, 1), np.uint8))
  labels = np.arange(n) % classes
  return data.DatasetSource(
      "toy", [str(c) for c in range(classes)], (2, 2, 1),
      {"train": data.ArraySplit(images, labels),
       "test": data.ArraySplit(images[:9], labels[:9])})


@hypothesis.given(st.lists(st.integers(0, 4), min_size=12, max_size=80),
                  st.integers(1, 11), st.integers(0, 3))
@hypothesis.settings(deadline=None, max_examples=60)
def test_a_validation_hold_out_partitions_the_training_split(labels, count,
                                                              seed):
  labels = np.asarray(labels)
  images = np.zeros((len(labels), 1, 1, 1), np.uint8)
  source = data.DatasetSource("toy", [str(c) for c in range(5)], (1, 1, 1),
                              {"train": data.ArraySplit(images, labels),
                               "test": data.ArraySplit(images, labels)})
  held_out = data.with_validation(source, count, seed)
  held = held_out.splits["validation"].indices
  rest = held_out.splits["train"].indices
  assert len(held) == count
  assert sorted(np.concatenate([held, rest]).tolist()) == list(
      range(len(labels)))
  # stratified: every class within one example of its proportional share
  for c in np.unique(labels):
    share = count * np.mean(labels == c)
    assert abs(np.sum(labels[held] == c) - share) < 1 + 1e-9
  np.testing.assert_array_equal(held_out.splits["validation"].labels,
                                labels[held])
  assert held_out.splits["test"] is source.splits["test"]


def test_hold_outs_are_refused_when_they_cannot_be():
  source = _source()
  with pytest.raises(ValueError, match="leaves no training examples"):
    data.with_validation(source, 60)
  with pytest.raises(ValueError, match=r"a subset of 0 examples"):
    data.with_validation(source, 0)
  twice = data.with_validation(source, 6)
  with pytest.raises(ValueError, match="already has a 'validation' split"):
    data.with_validation(twice, 6)
  with pytest.raises(ValueError, match="outside the split's 60 records"):
    data.SubsetSplit(source.splits["train"], [0, 60])


class _Decoding:
  """A split that counts how often it decodes."""

  def __init__(self, split):
    self.split, self.reads = split, 0

  def __len__(self):
    return len(self.split)

  def __getitem__(self, index):
    self.reads += 1
    record = self.split[index]
    return {"image": record["image"][..., 0], "label": record["label"]}


def test_in_memory_splits_hold_the_same_records(monkeypatch):
  source = _source(5000)
  lazy = _Decoding(source.splits["train"])
  wrapped = data.DatasetSource("toy", source.class_names, (2, 2, 1),
                               {"train": lazy, "test": source.splits["test"]})
  loaded = data.in_memory(wrapped, "always")
  assert lazy.reads == 5000  # once each, 2-D images given a channel axis
  np.testing.assert_array_equal(loaded.splits["train"].images,
                                source.splits["train"].images)
  np.testing.assert_array_equal(loaded.splits["train"].labels,
                                source.splits["train"].labels)
  assert data.in_memory(wrapped, "never") is wrapped
  monkeypatch.setattr(splits, "IN_MEMORY_LIMIT_BYTES", 100)
  assert data.in_memory(wrapped, "auto") is wrapped  # too large for auto
  with pytest.raises(ValueError, match="in-memory mode must be auto, always"
                     " or never, got 'yes'"):
    data.in_memory(wrapped, "yes")
  varying = data.DatasetSource("toy", source.class_names, None,
                               {"train": lazy, "test": lazy})
  assert data.in_memory(varying, "auto") is varying
  with pytest.raises(ValueError, match="images of varying sizes"):
    data.in_memory(varying, "always")
