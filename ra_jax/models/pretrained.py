"""Import ImageNet-pretrained torchvision ResNet and timm ViT checkpoints.

Reads a state dict the user already has (no network): `.safetensors` with the
`safetensors` package, `.pth` / `.pt` / `.bin` with PyTorch when installed.
Tensor layouts are converted (convolutions OIHW -> HWIO, linear weights
transposed, norm `weight` -> `scale`, BatchNorm running statistics ->
`batch_stats`) and every array is checked against the Flax model's own
shapes, so a checkpoint of the wrong architecture fails with the keys that
differ instead of loading half.
"""

import os
import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from ra_jax.models import vit as vit_lib
from ra_jax.models.registry import get_backbone

_CLASSIFIERS = ("fc", "head")  # torchvision / timm classifier modules


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A checkpoint file's tensors as NumPy arrays, by their PyTorch names."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"pretrained checkpoint {path!r} does not exist")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    return dict(load_file(path))
  try:
    import torch
  except ImportError as e:
    raise ImportError(
        f"reading {path!r} needs PyTorch (pip install torch); or convert it"
        " to .safetensors, which needs only the safetensors package") from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  for key in ("state_dict", "model"):  # common training-script wrappers
    if isinstance(state, dict) and isinstance(state.get(key), dict):
      state = state[key]
  if not isinstance(state, dict):
    raise ValueError(f"{path!r} holds a {type(state).__name__}, not a state"
                     " dict")
  return {k: v.detach().float().numpy() for k, v in state.items()
          if hasattr(v, "detach")}


def _flax_path(key: str) -> tuple[str, ...]:
  """PyTorch module path -> Flax module path (without the leaf)."""
  key = re.sub(r"^(layer\d+)\.(\d+)\.", r"\1_\2.", key)  # torchvision blocks
  key = re.sub(r"^blocks\.(\d+)\.", r"blocks_\1.", key)  # timm blocks
  key = key.replace("downsample.0.", "downsample_conv.")
  key = key.replace("downsample.1.", "downsample_bn.")
  key = key.replace(".mlp.", ".").replace("patch_embed.proj.", "patch_embed.")
  return tuple(key.split("."))


def convert_state_dict(state: dict[str, np.ndarray]) -> dict[str, Any]:
  """A torchvision-ResNet / timm-ViT state dict as Flax variables."""
  params, stats = {}, {}
  for key, value in state.items():
    *modules, leaf = _flax_path(key)
    if leaf == "num_batches_tracked":
      continue
    if not modules:  # cls_token, pos_embed: stored as they are
      params[leaf] = value
      continue
    if leaf in ("running_mean", "running_var"):
      target, leaf = stats, {"running_mean": "mean",
                             "running_var": "var"}[leaf]
    elif leaf == "weight":
      target = params
      if value.ndim == 4:  # convolution: (O, I, H, W) -> (H, W, I, O)
        leaf, value = "kernel", value.transpose(2, 3, 1, 0)
      elif value.ndim == 2:  # linear: (out, in) -> (in, out)
        leaf, value = "kernel", value.T
      else:  # BatchNorm / LayerNorm
        leaf = "scale"
    else:
      target = params
    node = target
    for module in modules:
      node = node.setdefault(module, {})
    node[leaf] = value
  return {"params": params, "batch_stats": stats} if stats else {
      "params": params}


def load_pretrained(model_name: str, path: str, *,
                    include_classifier: bool = False,
                    **backbone_kwargs) -> dict[str, Any]:
  """Flax variables of backbone `model_name` from a PyTorch checkpoint.

  Args:
    model_name: a registry name, e.g. "resnet50" or "vit_b16".
    path: torchvision ResNet or timm ViT weights (.safetensors or .pth).
    include_classifier: keep the checkpoint's classifier (`fc` / `head`);
      the backbone is then built with that many classes.
    **backbone_kwargs: as for `get_backbone` (e.g. image_size=384 for a ViT:
      position embeddings are then interpolated to the new grid).

  Returns:
    {"params": ..., ["batch_stats": ...]} matching `get_backbone(model_name,
    **backbone_kwargs)`; put them under "backbone" of a `RetrievalModel` with
    `with_pretrained_backbone`.
  """
  variables = convert_state_dict(read_state_dict(path))
  params = variables["params"]
  num_classes = None
  for name in _CLASSIFIERS:
    if name in params:
      classifier = params.pop(name)
      if include_classifier:
        params[name] = classifier
        num_classes = classifier["kernel"].shape[1]
  backbone = get_backbone(model_name, num_classes=num_classes,
                          **backbone_kwargs)
  if "pos_embed" in params and isinstance(backbone, vit_lib.ViT):
    grid = backbone.image_size // backbone.patch_size
    prefix = 1 if backbone.pool == "token" else 0
    params["pos_embed"] = np.asarray(vit_lib.interpolate_pos_embed(
        jnp.asarray(params["pos_embed"]), (grid, grid), prefix))
  expected = jax.eval_shape(
      backbone.init, jax.random.PRNGKey(0),
      jnp.zeros((1, *_input_size(backbone), 3)))
  _check_same_structure(path, model_name, expected, variables)
  return jax.tree.map(
      lambda want, have: jnp.asarray(have, want.dtype), dict(expected),
      variables)


def with_pretrained_backbone(variables: dict, pretrained: dict) -> dict:
  """`variables` of a RetrievalModel with its backbone replaced."""
  out = flax.core.unfreeze(variables)
  for collection, tree in pretrained.items():
    out[collection]["backbone"] = tree
  return out


_STEM_KERNELS = ("conv1", "patch_embed")  # ResNet, ViT: the RGB input layer


def adapt_input_channels(variables: dict, channels: int) -> dict:
  """Pretrained backbone variables for `channels`-channel images: for
  grayscale (1), the RGB stem kernel summed over its input channels, which
  equals feeding the gray image replicated to RGB; 3 leaves them as they
  are."""
  if channels == 3:
    return variables
  if channels != 1:
    raise ValueError(f"pretrained RGB weights cannot take {channels}-channel"
                     " images (only 1 or 3)")
  params = dict(variables["params"])
  for name in _STEM_KERNELS:
    if name in params:
      stem = dict(params[name])
      stem["kernel"] = jnp.sum(stem["kernel"], axis=2, keepdims=True)
      params[name] = stem
  return {**variables, "params": params}


def _input_size(backbone) -> tuple[int, int]:
  size = getattr(backbone, "image_size", 64)
  return size, size


def _check_same_structure(path, model_name, expected, variables):
  want = {jax.tree_util.keystr(k): v.shape
          for k, v in jax.tree_util.tree_leaves_with_path(dict(expected))}
  have = {jax.tree_util.keystr(k): np.shape(v)
          for k, v in jax.tree_util.tree_leaves_with_path(variables)}
  missing = sorted(set(want) - set(have))
  unexpected = sorted(set(have) - set(want))
  wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
  if missing or unexpected or wrong:
    lines = [f"{path!r} does not fit model {model_name!r}:"]
    if missing:
      lines.append(f"  missing: {', '.join(missing[:10])}")
    if unexpected:
      lines.append(f"  unexpected: {', '.join(unexpected[:10])}")
    for k in wrong[:10]:
      lines.append(f"  {k}: checkpoint {have[k]} vs model {want[k]}")
    raise ValueError("\n".join(lines))
