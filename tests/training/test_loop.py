"""train_and_evaluate end to end on digits: results, resume, bad work dirs."""

import glob
import json
import math
import os
import struct

import numpy as np
import pytest

from configs import digits
from ra_jax.training import loop


def _tiny(**train):
  config = digits.get_config("size=tiny")
  for key, value in train.items():
    setattr(config.train, key, value)
  return config


def _tensorboard_tags(directory) -> set[str]:
  """Scalar tags in TensorBoard event files (TFRecord framing: length,
  length crc, payload, payload crc)."""
  from tensorboardX.proto import event_pb2
  tags = set()
  for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
    with open(path, "rb") as f:
      raw = f.read()
    offset = 0
    while offset < len(raw):
      (length,) = struct.unpack("<Q", raw[offset:offset + 8])
      event = event_pb2.Event.FromString(raw[offset + 12:offset + 12 + length])
      tags.update(v.tag for v in event.summary.value)
      offset += 16 + length
  return tags


def test_digits_tiny_run_writes_results(tmp_path):
  config = _tiny()
  config.eval.every = 2
  results = loop.train_and_evaluate(config, str(tmp_path))
  saved = json.load(open(tmp_path / "results.json"))
  assert saved["steps"] == 3
  for key in ("map", "map@10", "precision@10", "mrr"):
    assert 0.0 <= saved["exact"][key] <= 1.0
  assert saved["exact"]["num_queries"] == 450
  assert "precision@10" in saved["two_stage_1"]
  assert 0.0 <= saved["nearest_anchor_accuracy"] <= 1.0
  assert results["exact"] == saved["exact"]
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [1, 2, 3]
  assert all(math.isfinite(r["train/loss"]) for r in rows)
  assert "eval/map@100" not in rows[0]  # every 2 steps and at the end
  for row in rows[1:]:
    assert 0.0 <= row["eval/map@100"] <= 1.0
    assert 0.0 <= row["eval/nearest_anchor_accuracy"] <= 1.0
  assert saved["train_images_per_second"] > 0
  tags = _tensorboard_tags(tmp_path / "tensorboard")
  # TensorBoard tags cannot hold "@"; tensorboardX writes "_".
  assert {"train/loss", "train/attract", "eval/map_100"} <= tags
  assert json.load(open(tmp_path / "config.json"))["loss"]["name"] == "cam"


def test_workdir_of_another_configuration_is_refused(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path.parent)  # a relative --workdir, as users type
  loop.train_and_evaluate(_tiny(), tmp_path.name)
  before = open(tmp_path / "results.json").read()
  other = _tiny()
  other.loss.margin = 2.0
  with pytest.raises(ValueError, match="another loss configuration"):
    loop.train_and_evaluate(other, str(tmp_path))
  assert open(tmp_path / "results.json").read() == before


def test_config_argument_errors_name_the_key():
  with pytest.raises(ValueError, match="unknown key 'los'"):
    digits.get_config("los=ce")
  with pytest.raises(ValueError, match="loss='hinge'.*cam, ce"):
    digits.get_config("loss=hinge")
  config = digits.get_config("loss=triplet,shot=5")
  assert config.loss.mining == "semi_hard" and config.dataset.shot == 5
  assert config.dataset.images_per_class == 4


@pytest.mark.parametrize("name", ["cifar100", "svhn", "food101",
                                  "fashion_mnist"])
def test_every_catalogue_config_runs_its_tiny_variant_on_mock_data(
    name, tmp_path):
  import importlib
  import tensorflow_datasets as tfds
  config = importlib.import_module(f"configs.{name}").get_config("size=tiny")
  config.dataset.builder = "catalogue"
  config.eval.ks = (1, 10)
  with tfds.testing.mock_data(num_examples=24, data_dir=str(tmp_path / "d")):
    results = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["steps"] == 3
  assert 0.0 <= results["exact"]["map"] <= 1.0


def test_tiny_imagenet_config_runs_on_a_miniature_zip(tmp_path):
  from configs import tiny_imagenet
  from tests.data.test_sources import _miniature_tiny_imagenet
  manual = tmp_path / "manual"
  manual.mkdir()
  _miniature_tiny_imagenet(str(manual))
  config = tiny_imagenet.get_config("size=tiny")
  config.dataset.data_dir = str(tmp_path / "tfds")
  config.dataset.manual_dir = str(manual)
  config.eval.ks = (1, 10)
  results = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["exact"]["num_queries"] == 200


@pytest.mark.parametrize("arg", ["model=vit_s4", "loss=triplet", "loss=ce",
                                 "shot=2"])
def test_grid_arguments_run(arg, tmp_path):
  config = digits.get_config(f"size=tiny,{arg}")
  if arg == "model=vit_s4":
    config.dataset.image_size = 8  # 8x8 digits, 2x2 patches of 4
  results = loop.train_and_evaluate(config, str(tmp_path))
  assert 0.0 <= results["exact"]["map"] <= 1.0
  if arg == "shot=2":
    saved = json.load(open(tmp_path / "few_shot_indices.json"))
    assert len(saved["indices"]) == 20


def test_missing_dataset_is_a_clear_error_and_writes_nothing(tmp_path):
  from configs import cifar100
  config = cifar100.get_config("size=tiny")
  config.dataset.data_dir = str(tmp_path / "no_data")
  with pytest.raises(FileNotFoundError, match="'cifar100' is not prepared in"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_pretrained_backbone_starts_the_run(tmp_path):
  torch = pytest.importorskip("torch")
  from safetensors.torch import save_file
  from tests.models import torch_reference
  from ra_jax.training import experiment
  reference = torch_reference.randomize_(
      torch_reference.ResNet((2, 2, 2, 2), False))
  path = str(tmp_path / "resnet18.safetensors")
  save_file({k: v.contiguous() for k, v in reference.state_dict().items()},
            path)
  config = digits.get_config("size=tiny")
  config.model.name, config.model.width = "resnet18", 0
  config.model.pretrained = path
  state = experiment.build(config, str(tmp_path)).init_state()
  rgb = reference.conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
  np.testing.assert_allclose(  # digits are gray: RGB kernels summed
      state.params["backbone"]["conv1"]["kernel"],
      rgb.sum(axis=2, keepdims=True), rtol=1e-6)
  np.testing.assert_array_equal(
      state.batch_stats["backbone"]["bn1"]["mean"],
      reference.bn1.running_mean.numpy())
  config.model.pretrained = str(tmp_path / "missing.safetensors")
  with pytest.raises(FileNotFoundError, match="missing.safetensors"):
    experiment.build(config, str(tmp_path)).init_state()


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch):
  import jax.numpy as jnp
  from ra_jax.training import step as step_lib
  real = step_lib.make_train_step

  def poisoned(model, tx, loss):
    inner = real(model, tx, loss)

    def train_step(state, batch):
      new_state, metrics = inner(state, batch)
      metrics["loss"] = jnp.where(state.step >= 2, jnp.nan, metrics["loss"])
      return new_state, metrics
    return train_step

  monkeypatch.setattr(step_lib, "make_train_step", poisoned)
  config = _tiny(steps=4, checkpoint_every=2)
  with pytest.raises(loop.NonFiniteLossError,
                     match=r"step 3: .*'attract': .*'loss': nan.*last good"
                           r" checkpoint is step 2"):
    loop.train_and_evaluate(config, str(tmp_path))
  saved = os.listdir(tmp_path / "checkpoints")
  assert "2" in saved and "3" not in saved
  assert not (tmp_path / "results.json").exists()
