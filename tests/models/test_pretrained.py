"""Pretrained import: a PyTorch model with torchvision's / timm's key names and
random weights must give the same outputs after conversion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ra_jax import models
from ra_jax.models import pretrained

pytestmark = pytest.mark.slow  # builds PyTorch references: seconds each

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed (CI installs torch==2.13.0)")
from tests.models import torch_reference  # pylint: disable=g-import-not-at-top

RESNET_DEPTHS = {18: ((2, 2, 2, 2), False), 50: ((3, 4, 6, 3), True)}


def _save(model, tmp_path, fmt):
  state = model.state_dict()
  if fmt == "pth":
    path = str(tmp_path / "weights.pth")
    torch.save({"state_dict": state}, path)  # wrapped, as training scripts do
  else:
    from safetensors.torch import save_file
    path = str(tmp_path / "weights.safetensors")
    save_file({k: v.contiguous() for k, v in state.items()}, path)
  return path


def _compare(torch_model, flax_name, path, images, **kwargs):
  torch_model.eval()
  with torch.no_grad():
    expected = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2)))
  variables = models.load_pretrained(flax_name, path, include_classifier=True,
                                     **kwargs)
  backbone = models.get_backbone(flax_name, num_classes=1000, **kwargs)
  got = backbone.apply(variables, jnp.asarray(images))
  np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=0)
  return variables


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_torchvision_resnet_matches_pytorch(depth, fmt, tmp_path):
  stage_sizes, bottleneck = RESNET_DEPTHS[depth]
  model = torch_reference.randomize_(
      torch_reference.ResNet(stage_sizes, bottleneck), seed=depth)
  images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(
      np.float32)
  _compare(model, f"resnet{depth}", _save(model, tmp_path, fmt), images)


def test_timm_vit_matches_pytorch(tmp_path):
  model = torch_reference.randomize_(
      torch_reference.VisionTransformer(224, 16, 192, 12, 3, 768), seed=1)
  images = np.random.default_rng(1).normal(size=(2, 224, 224, 3)).astype(
      np.float32)
  _compare(model, "vit_ti16", _save(model, tmp_path, "safetensors"), images)


def test_vit_checkpoint_loads_at_another_image_size(tmp_path):
  model = torch_reference.VisionTransformer(224, 16, 192, 12, 3, 768)
  path = _save(model, tmp_path, "safetensors")
  variables = models.load_pretrained("vit_ti16", path, image_size=64)
  assert variables["params"]["pos_embed"].shape == (1, 17, 192)
  assert "head" not in variables["params"]
  out = models.get_backbone("vit_ti16", image_size=64).apply(
      variables, jnp.zeros((1, 64, 64, 3)))
  assert out.shape == (1, 192)


def test_backbone_goes_into_a_retrieval_model(tmp_path):
  torch_model = torch_reference.randomize_(
      torch_reference.ResNet((2, 2, 2, 2), False))
  path = _save(torch_model, tmp_path, "safetensors")
  model = models.get_model("resnet18", embedding_dim=8, num_classes=3)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0),
                                  jnp.zeros((1, 64, 64, 3)))
  merged = pretrained.with_pretrained_backbone(
      variables, models.load_pretrained("resnet18", path))
  np.testing.assert_array_equal(
      merged["params"]["backbone"]["conv1"]["kernel"],
      torch_model.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
  assert jax.jit(model.apply)(merged, jnp.zeros((2, 64, 64, 3))).shape == (
      2, 8)


def test_wrong_architecture_names_the_differences(tmp_path):
  model = torch_reference.ResNet((2, 2, 2, 2), False)
  path = _save(model, tmp_path, "safetensors")
  with pytest.raises(ValueError, match=r"does not fit model 'resnet34'"
                     r"(.|\n)*missing: .*layer1_2"):
    models.load_pretrained("resnet34", path)
  with pytest.raises(ValueError, match="does not fit model 'resnet50'"
                     r"(.|\n)*checkpoint \(3, 3, 64, 64\) vs model"):
    models.load_pretrained("resnet50", path)
  with pytest.raises(FileNotFoundError, match="nowhere.pth"):
    models.load_pretrained("resnet18", str(tmp_path / "nowhere.pth"))
