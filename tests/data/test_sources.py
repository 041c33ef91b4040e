"""Dataset sources: TFDS catalogue (mock data), own builders, digits, folders."""

import io
import os
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from ra_jax import data
from ra_jax.data.builders import fashion_mnist_idx

CATALOGUE = [("cifar100", 100, (32, 32, 3), "test"),
             ("food101", 101, None, "validation"),
             ("svhn_cropped", 10, (32, 32, 3), "test"),
             ("fashion_mnist", 10, (28, 28, 1), "test")]


@pytest.mark.parametrize("name,classes,shape,query", CATALOGUE)
def test_catalogue_dataset_through_mock_data_and_grain(name, classes, shape,
                                                       query, tmp_path):
  with tfds.testing.mock_data(num_examples=12, data_dir=str(tmp_path)):
    source = data.tfds_source(name, own_builder=False)
    assert source.num_classes == classes
    assert source.image_shape == shape
    assert (source.query_split, source.database_split) == (query, "train")
    assert source.split_sizes["train"] == 12
    augment = data.preset(name)
    batch = next(iter(data.train_dataset(
        source.splits["train"], augment, global_batch_size=4, seed=0,
        process_index=0, process_count=1)))
    size = augment.image_size
    assert batch["image"].shape[:3] == (4, size, size)
    assert batch["image"].dtype == np.float32
    assert batch["label"].shape == (4,)
    assert np.all((batch["label"] >= 0) & (batch["label"] < classes))


def _jpeg(seed):
  rng = np.random.default_rng(seed)
  buffer = io.BytesIO()
  Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(
      buffer, format="JPEG")
  return buffer.getvalue()


def _miniature_tiny_imagenet(directory):
  """The official zip's layout with 200 classes, 2 train + 1 val image each."""
  wnids = [f"n{i:08d}" for i in range(200)]
  path = os.path.join(directory, "tiny-imagenet-200.zip")
  with zipfile.ZipFile(path, "w") as z:
    root = "tiny-imagenet-200"
    z.writestr(f"{root}/wnids.txt", "\n".join(wnids) + "\n")
    z.writestr(f"{root}/words.txt", "".join(f"{w}\tthing {w}\n" for w in wnids))
    annotations = []
    for c, wnid in enumerate(wnids):
      for k in range(2):
        z.writestr(f"{root}/train/{wnid}/images/{wnid}_{k}.JPEG",
                   _jpeg(10 * c + k))
      z.writestr(f"{root}/train/{wnid}/{wnid}_boxes.txt", "")
      z.writestr(f"{root}/val/images/val_{c}.JPEG", _jpeg(100000 + c))
      annotations.append(f"val_{c}.JPEG\t{wnid}\t0\t0\t63\t63")
    z.writestr(f"{root}/val/val_annotations.txt", "\n".join(annotations))
    z.writestr(f"{root}/test/images/test_0.JPEG", _jpeg(7))
  return wnids


def test_tiny_imagenet_builder_on_a_miniature_zip(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  wnids = _miniature_tiny_imagenet(str(manual))
  source = data.get_source("tiny_imagenet", data_dir=str(tmp_path / "tfds"),
                           manual_dir=str(manual))
  assert source.num_classes == 200
  assert source.split_sizes == {"train": 400, "validation": 200}
  assert source.image_shape == (64, 64, 3)
  assert source.query_split == "validation"
  assert list(source.class_names) == wnids
  labels = sorted(int(source.splits["validation"][i]["label"])
                  for i in range(200))
  assert labels == list(range(200))  # one val image per class, by annotation
  record = source.splits["train"][0]
  assert record["image"].shape == (64, 64, 3)
  # A second call reads what was built (no manual dir needed any more).
  again = data.get_source("tiny_imagenet", data_dir=str(tmp_path / "tfds"))
  assert again.split_sizes == source.split_sizes


def test_tiny_imagenet_missing_zip_says_where_to_put_it(tmp_path):
  with pytest.raises(FileNotFoundError, match="tiny-imagenet-200.zip"):
    data.get_source("tiny_imagenet", data_dir=str(tmp_path / "tfds"),
                    manual_dir=str(tmp_path))
  assert not os.path.exists(tmp_path / "tfds" / "tiny_imagenet" / "1.0.0")


def test_fashion_mnist_builds_offline_from_debian_files(fashion_mnist_dir):
  source = data.get_source("fashion_mnist", data_dir=fashion_mnist_dir)
  assert source.split_sizes == {"train": 60000, "test": 10000}
  assert source.class_names[0] == "T-shirt/top"
  assert source.image_shape == (28, 28, 1)
  counts = np.bincount([source.splits["test"][i]["label"]
                        for i in range(0, 10000, 7)], minlength=10)
  assert np.all(counts > 100)  # all ten classes, roughly balanced
  batch = next(iter(data.train_dataset(
      source.splits["train"], data.preset("fashion_mnist"), global_batch_size=64,
      seed=0, process_index=0, process_count=1)))
  assert batch["image"].shape == (64, 28, 28, 1)


def test_idx_reader_rejects_wrong_content(tmp_path):
  path = str(tmp_path / "train-labels-idx1-ubyte")
  with open(path, "wb") as f:
    f.write(b"\0\0\x08\x01" + (3).to_bytes(4, "big") + bytes([1, 2, 3]))
  np.testing.assert_array_equal(fashion_mnist_idx.read_idx(path), [1, 2, 3])
  with pytest.raises(ValueError, match="SHA-256"):
    fashion_mnist_idx.read_idx(path, "0" * 64)


def test_digits_source():
  source = data.get_source("digits")
  assert source.split_sizes == {"train": 1347, "test": 450}
  assert source.image_shape == (8, 8, 1) and source.num_classes == 10
  assert source.splits["train"][0]["image"].dtype == np.uint8
  assert source.describe()["query_split"] == "test"


def _write_folder(root, classes=("cat", "dog"), per_class=3, size=(20, 16)):
  for c, name in enumerate(classes):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for k in range(per_class):
      Image.fromarray(np.full((size[1], size[0], 3), 40 * c + k, np.uint8)
                      ).save(os.path.join(root, name, f"{k}.png"))


def test_image_folder_source(tmp_path):
  _write_folder(str(tmp_path / "train"))
  _write_folder(str(tmp_path / "test"), per_class=2)
  source = data.get_source("folder", root=str(tmp_path))
  assert source.class_names == ["cat", "dog"]
  assert source.split_sizes == {"train": 6, "test": 4}
  assert source.image_shape == (16, 20, 3)
  assert (source.query_split, source.database_split) == ("test", "train")
  record = source.splits["train"][4]
  assert record["label"] == 1 and record["image"].shape == (16, 20, 3)
  flat = tmp_path / "flat"
  _write_folder(str(flat))
  single = data.get_source("folder", root=str(flat))
  assert single.split_sizes == {"train": 6}
  assert single.query_split == single.database_split == "train"


@pytest.mark.parametrize("problem,match", [
    ("extension", r"notes\.txt: unsupported extension"),
    ("unreadable", r"broken\.png: unreadable image"),
    ("empty", r"bird: empty class folder"),
])
def test_image_folder_bad_input_names_the_file(problem, match, tmp_path):
  _write_folder(str(tmp_path))
  if problem == "extension":
    (tmp_path / "cat" / "notes.txt").write_text("hello")
  elif problem == "unreadable":
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
  else:
    (tmp_path / "bird").mkdir()
  with pytest.raises(ValueError, match=match):
    data.get_source("folder", root=str(tmp_path))


def test_unknown_dataset_and_bad_protocol():
  with pytest.raises(ValueError, match="unknown dataset 'cifar1000'"):
    data.get_source("cifar1000")
  with pytest.raises(ValueError, match="query_split 'val'"):
    data.get_source("digits").with_protocol(query_split="val")
