"""Tiny ImageNet (CS231n): 200 classes of 64x64 images, not in the TFDS
catalogue. Reads the official `tiny-imagenet-200.zip` from the manual dir
(http://cs231n.stanford.edu/tiny-imagenet-200.zip; download it yourself).

Train: 500 images per class under train/<wnid>/images/. Validation: 50 per
class under val/images/, labelled by val/val_annotations.txt. The test split
has no labels and is not built.
"""

import os
import zipfile

import tensorflow_datasets as tfds

ZIP_NAME = "tiny-imagenet-200.zip"
ROOT = "tiny-imagenet-200"


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
  """Tiny ImageNet-200 from the official zip."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download {ZIP_NAME} from http://cs231n.stanford.edu/ and place it in"
      " the manual dir (default: <data_dir>/downloads/manual/).")

  def _wnids(self, archive: zipfile.ZipFile) -> list[str]:
    return archive.read(f"{ROOT}/wnids.txt").decode().split()

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(64, 64, 3),
                                         encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=200),
            "id": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="http://cs231n.stanford.edu/")

  def _split_generators(self, dl_manager):
    path = os.path.join(os.fspath(dl_manager.manual_dir), ZIP_NAME)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} not found. " +
                              self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    with zipfile.ZipFile(path) as archive:
      wnids = self._wnids(archive)
    if len(wnids) != 200:
      raise ValueError(f"{path}: wnids.txt lists {len(wnids)} classes, not"
                       " 200")
    self.info.features["label"].names = wnids
    return {"train": self._generate_examples(path, "train"),
            "validation": self._generate_examples(path, "val")}

  def _generate_examples(self, path, split):
    with zipfile.ZipFile(path) as archive:
      label_of = {w: i for i, w in enumerate(self._wnids(archive))}
      if split == "train":
        for name in archive.namelist():
          parts = name.split("/")
          if (len(parts) == 5 and parts[1] == "train" and
              parts[3] == "images" and name.endswith(".JPEG")):
            yield parts[4], {"image": archive.read(name),
                             "label": label_of[parts[2]], "id": parts[4]}
      else:
        annotations = archive.read(f"{ROOT}/val/val_annotations.txt").decode()
        for line in annotations.splitlines():
          if not line.strip():
            continue
          filename, wnid = line.split("\t")[:2]
          yield filename, {
              "image": archive.read(f"{ROOT}/val/images/{filename}"),
              "label": label_of[wnid], "id": filename}
