"""configs/common.py: dotted overrides, the dataset table's image sizes, and
the validated values over the literature's defaults."""

import pytest

from configs import common, digits, fashion_mnist, validated
from ra_jax import data, losses


def test_overrides_parse_literals_and_name_unknown_fields():
  config = fashion_mnist.get_config("loss=triplet")
  common.apply_overrides(config, ["optim.learning_rate=0.5",
                                  "loss.mining=hard",
                                  "dataset.in_memory=never"])
  assert config.optim.learning_rate == 0.5
  assert (config.loss.mining, config.dataset.in_memory) == ("hard", "never")
  with pytest.raises(KeyError, match="learning_rat"):
    common.apply_overrides(config, ["optim.learning_rat=1"])
  with pytest.raises(KeyError, match="no section 'optimizer'"):
    common.set_fields(config, {"optimizer.learning_rate": 1.0})
  with pytest.raises(ValueError, match="expected FIELD=VALUE"):
    common.apply_overrides(config, ["optim.learning_rate"])


def test_image_sizes_come_from_the_dataset_table():
  assert data.DATASETS["digits"].augment.image_size == 8
  assert digits.get_config().dataset.image_size == 8
  assert fashion_mnist.get_config().dataset.image_size == 28


def test_configs_carry_the_validated_values_not_the_signatures():
  """The losses' signatures keep the literature's constants; every config
  gets the values validated on Fashion-MNIST instead."""
  for name, values in validated.LOSS.items():
    config = digits.get_config(f"loss={name}")
    for key, value in values.items():
      assert config.loss[key] == value, (name, key)
  defaults = {name: spec.hyperparameters
              for name, spec in losses.LOSSES.items()}
  assert (defaults["arcface"]["scale"], defaults["arcface"]["margin"]) == (
      64.0, 0.5)
  assert (defaults["proxy_anchor"]["scale"],
          defaults["proxy_anchor"]["margin"]) == (32.0, 0.1)
  assert defaults["triplet"]["margin"] == 0.2
  assert defaults["center"]["center_weight"] == 0.003
  assert (defaults["contrastive"]["positive_margin"],
          defaults["contrastive"]["negative_margin"]) == (0.0, 1.0)
  assert (defaults["cam"]["margin"], defaults["cam"]["min_norm"]) == (
      None, None)  # scale-aware: sqrt(D / 2) and sqrt(D)


def test_a_vit_gets_its_family_recipe_over_the_loss_optimizer():
  """The ResNets' SGD recipe diverges a ViT (issue 30); the family's
  fields for the loss replace it, every loss has them, and the loss keeps
  its class-parameter multiplier."""
  assert set(validated.FAMILY_OPTIM["vit"]) == set(losses.LOSSES)
  for loss in losses.LOSSES:
    resnet = fashion_mnist.get_config(f"loss={loss}").optim
    vit = fashion_mnist.get_config(f"model=vit_ti7,loss={loss}").optim
    for field, value in validated.FAMILY_OPTIM["vit"][loss].items():
      assert vit[field] == value, (loss, field)
    assert vit.anchor_lr_mult == resnet.anchor_lr_mult
  assert fashion_mnist.get_config("loss=cam").optim.name == "sgd"
  assert fashion_mnist.get_config("loss=cam").optim.grad_clip == 0.0
  # the ViT's own selection: clipped SGD, where the ResNet's is unclipped
  vit_cam = fashion_mnist.get_config("model=vit_ti7,loss=cam").optim
  assert (vit_cam.name, vit_cam.grad_clip) == ("sgd", 1.0)
