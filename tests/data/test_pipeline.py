"""grain pipelines: sharding, padding, balance, few-shot, checkpointable order."""

import json

import numpy as np
import pytest

from ra_jax import data


def _toy_split(n=50, classes=5):
  images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones(
      (1, 4, 4, 1), np.uint8)  # pixel value = example index
  return data.ArraySplit(images, np.arange(n) % classes)


NO_AUG = data.AugmentConfig(image_size=4, train="none", flip=False,
                            mean=(0.0,), std=(1.0 / 255.0,))  # identity


def _ids(batch):
  return batch["image"][:, 0, 0, 0].round().astype(int).tolist()


@pytest.mark.parametrize("images_per_class", [None, 2])
def test_global_batches_do_not_depend_on_the_number_of_hosts(images_per_class):
  split = _toy_split(48, classes=6)
  kwargs = dict(global_batch_size=12, seed=3, num_epochs=2,
                images_per_class=images_per_class, labels=split.labels)
  one = [_ids(b) for b in data.train_dataset(split, NO_AUG, process_index=0,
                                             process_count=1, **kwargs)]
  hosts = [[_ids(b) for b in data.train_dataset(
      split, NO_AUG, process_index=p, process_count=3, **kwargs)]
           for p in range(3)]
  assert len(one) == 8 and all(len(h) == 8 for h in hosts)
  for step, batch in enumerate(one):
    assert sum((h[step] for h in hosts), []) == batch
  if images_per_class is None:  # each epoch covers every record once
    assert sorted(sum(one[:4], [])) == list(range(48))


def test_hosts_augment_their_rows_like_a_single_host():
  split = _toy_split(24)
  aug = data.preset("digits", image_size=4)
  kwargs = dict(global_batch_size=8, seed=1)
  whole = next(iter(data.train_dataset(split, aug, process_index=0,
                                       process_count=1, **kwargs)))
  second = next(iter(data.train_dataset(split, aug, process_index=1,
                                        process_count=2, **kwargs)))
  np.testing.assert_array_equal(second["image"], whole["image"][4:])
  with pytest.raises(ValueError, match="not divisible by the 3 processes"):
    data.train_dataset(split, aug, process_index=0, process_count=3, **kwargs)


def test_epochs_are_reshuffled_and_seeded():
  split = _toy_split(20)
  order = lambda seed: [i for b in data.train_dataset(
      split, NO_AUG, global_batch_size=10, seed=seed, num_epochs=2, process_index=0,
      process_count=1) for i in _ids(b)]
  first = order(0)
  assert first == order(0)
  assert first != order(1)
  assert sorted(first[:20]) == sorted(first[20:]) == list(range(20))
  assert first[:20] != first[20:]


def test_iterator_state_restores_the_exact_order():
  split = _toy_split(40)
  ds = data.train_dataset(split, data.preset("digits", image_size=4),
                          global_batch_size=8, seed=5, process_index=0,
                          process_count=1)
  it = iter(ds)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(7)]  # crosses epoch boundaries
  resumed = iter(ds)
  resumed.set_state(json.loads(json.dumps(state)))  # survives serialisation
  for want in expected:
    got = next(resumed)
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["label"], want["label"])


@pytest.mark.parametrize("n,batch,hosts", [(23, 5, 1), (23, 5, 2), (40, 8, 3)])
def test_eval_covers_every_example_once_with_padding(n, batch, hosts):
  split = _toy_split(n)
  indices, per_host_batches = [], set()
  for host in range(hosts):
    batches = list(data.eval_dataset(split, NO_AUG, batch_size=batch,
                                     process_index=host,
                                     process_count=hosts))
    per_host_batches.add(len(batches))
    for b in batches:
      assert b["image"].shape[0] == batch
      real = b["index"][b["mask"]]
      np.testing.assert_array_equal(b["index"][~b["mask"]], -1)
      np.testing.assert_array_equal(np.asarray(_ids(b))[b["mask"]], real)
      np.testing.assert_array_equal(b["label"][b["mask"]], real % 5)
      indices.extend(real.tolist())
  assert sorted(indices) == list(range(n))
  assert len(per_host_batches) == 1  # hosts stay in lock step


def test_class_balanced_batches():
  split = _toy_split(60, classes=6)
  ds = data.train_dataset(split, NO_AUG, global_batch_size=12, seed=0,
                          images_per_class=4, labels=split.labels,
                          process_index=0, process_count=1)
  it = iter(ds)
  for _ in range(5):
    labels = next(it)["label"]
    counts = np.bincount(labels, minlength=6)
    assert sorted(counts[counts > 0].tolist()) == [4, 4, 4]
  with pytest.raises(ValueError, match="needs 7 classes"):
    data.train_dataset(split, NO_AUG, global_batch_size=14, seed=0,
                       images_per_class=2, labels=split.labels,
                       process_index=0, process_count=1)


def test_few_shot_is_deterministic_and_saved_once(tmp_path):
  labels = np.arange(100) % 10
  a = data.few_shot_indices(labels, shot=3, seed=7)
  np.testing.assert_array_equal(a, data.few_shot_indices(labels, 3, 7))
  assert not np.array_equal(a, data.few_shot_indices(labels, 3, 8))
  assert np.all(np.bincount(labels[a]) == 3)
  path = str(tmp_path / "few_shot.json")
  data.save_few_shot_indices(path, a, {"shot": 3, "seed": 7})
  data.save_few_shot_indices(path, a, {"shot": 3, "seed": 7})  # same: fine
  with pytest.raises(ValueError, match="refusing to overwrite"):
    data.save_few_shot_indices(path, data.few_shot_indices(labels, 3, 8),
                               {"shot": 3, "seed": 8})
  assert json.load(open(path))["indices"] == a.tolist()
  with pytest.raises(ValueError, match="class 0 has 10 examples"):
    data.few_shot_indices(labels, shot=11, seed=0)
  subset = data.SubsetSplit(_toy_split(100, classes=10), a)
  assert len(subset) == 30 and subset[0]["label"] == labels[a[0]]


def test_augmentation_presets():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 255, (40, 50, 3), np.uint8)
  for name in ("cifar100", "svhn_cropped", "food101", "tiny_imagenet"):
    config = data.preset(name)
    out = data.augment.train_transform(image, config, rng)
    assert out.shape == (config.image_size, config.image_size, 3)
    assert out.dtype == np.float32
    ev = data.augment.eval_transform(image, config)
    assert ev.shape == out.shape
  assert not data.preset("svhn_cropped").flip
  assert not data.preset("digits").flip
  # crop_flip on an image of the right size keeps its content, shifted.
  small = rng.integers(0, 255, (32, 32, 3), np.uint8)
  config = data.AugmentConfig(32, "crop_flip", 4, False, (0.0,), (1 / 255,))
  np.testing.assert_allclose(data.augment.eval_transform(small, config), small,
                             atol=1e-3)


def test_iterator_state_carries_over_to_another_host_count():
  split = _toy_split(48, classes=6)
  kwargs = dict(global_batch_size=12, seed=2)
  one = iter(data.train_dataset(split, NO_AUG, process_index=0,
                                process_count=1, **kwargs))
  for _ in range(5):
    next(one)
  state = one.get_state()
  want = _ids(next(one))  # global batch 5
  got = []
  for host in range(2):
    it = iter(data.train_dataset(split, NO_AUG, process_index=host,
                                 process_count=2, **kwargs))
    it.set_state(state)
    got += _ids(next(it))
  assert got == want
