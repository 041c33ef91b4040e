"""Models by name, so configs can say `model.name = "resnet18_cifar"`.

Names: `mlp` (flattened pixels, two 256-unit ReLU layers; `width=`,
`depth=`), `resnet{18,34,50,101,152}` (ImageNet stem, for >= 64 px images),
`resnet{depth}_cifar` (CIFAR stem, for 32 px), and `vit_{ti,s,b}{patch}`
(e.g. `vit_s16` at 224 px, `vit_s8` at 64 px, `vit_s4` at 32 px; pass
`image_size=` for other sizes). `FAMILIES` is the one table of which name
builds what and which run options (`model.width`, `model.depth`, the image
size) each family takes.
"""

import dataclasses
import re
from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp

from ra_jax.models import mlp as mlp_lib
from ra_jax.models import resnet as resnet_lib
from ra_jax.models import vit as vit_lib
from ra_jax.models.head import class_param_shapes
from ra_jax.models.head import EmbeddingHead
from ra_jax.models.head import RetrievalModel

# The image size a ViT's position embeddings are made for, by patch size.
VIT_DEFAULT_IMAGE_SIZE = {16: 224, 14: 224, 32: 224, 8: 64, 4: 32}


def _mlp(match, common, kwargs):
  return mlp_lib.MLP(**common, **kwargs)


def _resnet(match, common, kwargs):
  depth = int(match.group(1))
  if depth not in resnet_lib.DEPTHS:
    return None
  stem = "cifar" if match.group(2) else "imagenet"
  return resnet_lib.resnet(depth, stem=stem, **common, **kwargs)


def _vit(match, common, kwargs):
  patch = int(match.group(2))
  image_size = kwargs.pop("image_size", VIT_DEFAULT_IMAGE_SIZE.get(patch))
  if image_size is None:
    raise ValueError(f"model {match.group(0)!r}: pass image_size= (no"
                     f" default for patch size {patch})")
  return vit_lib.vit(match.group(1), patch, image_size, **common, **kwargs)


@dataclasses.dataclass(frozen=True)
class Family:
  """Backbones whose names match `pattern`, built by `build(match, common
  kwargs, kwargs)` (None: the name matches but is not a model). `options`:
  the run options (`backbone_options`) the family takes."""
  pattern: re.Pattern
  build: Callable[..., Optional[nn.Module]]
  options: tuple[str, ...]
  names: tuple[str, ...]  # the standard names, for error messages


FAMILIES = {
    "mlp": Family(re.compile(r"mlp"), _mlp, ("width", "depth"), ("mlp",)),
    "resnet": Family(
        re.compile(r"resnet(\d+)(_cifar)?"), _resnet, ("width",),
        tuple(f"resnet{d}{s}" for d in resnet_lib.DEPTHS
              for s in ("", "_cifar"))),
    "vit": Family(
        re.compile(r"vit_(ti|s|b)(\d+)"), _vit, ("depth", "image_size"),
        tuple(f"vit_{size}{p}" for size in vit_lib.SIZES for p in (16, 8, 4))),
}


def model_names() -> list[str]:
  """The standard names (any depth in DEPTHS / ViT patch size also works)."""
  return [name for family in FAMILIES.values() for name in family.names]


def family_of(name: str) -> tuple[str, re.Match]:
  """(family name, the name's match) of a model name; a ValueError lists
  the known names."""
  for family_name, family in FAMILIES.items():
    match = family.pattern.fullmatch(name)
    if match:
      return family_name, match
  raise ValueError(f"unknown model name {name!r}; known names:"
                   f" {', '.join(model_names())}")


def backbone_options(name: str, **options) -> dict[str, Any]:
  """The run options (width, depth, image_size) that model `name`'s family
  takes, leaving out those at 0 (the architecture's default)."""
  family = FAMILIES[family_of(name)[0]]
  return {key: value for key, value in options.items()
          if key in family.options and value}


def get_backbone(name: str, *, num_classes: Optional[int] = None,
                 dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 **kwargs) -> nn.Module:
  """The backbone called `name`: images -> features, or logits with
  `num_classes`. kwargs go to `MLP` (width, depth), `ResNet` (e.g. width)
  or `ViT` (e.g. image_size, pool, depth)."""
  common = dict(num_classes=num_classes, dtype=dtype, param_dtype=param_dtype)
  family_name, match = family_of(name)
  backbone = FAMILIES[family_name].build(match, common, dict(kwargs))
  if backbone is None:
    raise ValueError(f"unknown model name {name!r}; known names:"
                     f" {', '.join(model_names())}")
  return backbone


def get_model(name: str, *, embedding_dim: int, num_classes: int,
              class_params: Any = ("anchors",),
              head_batch_norm: bool = False, l2_normalize: bool = False,
              anchor_init: str = "normal", anchor_init_scale: float = 1.0,
              dtype: Any = jnp.float32,
              param_dtype: Any = jnp.float32, **backbone_kwargs
              ) -> RetrievalModel:
  """Backbone `name` + EmbeddingHead: images (B, H, W, 3) -> embeddings (B, D).

  `class_params` are the per-class parameters the loss needs: names of (C, D)
  matrices, e.g. ("anchors",) for the class anchor margin loss, or a mapping
  name -> "matrix" | "vector", e.g. {"kernel": "matrix", "bias": "vector"}
  for softmax cross-entropy (a loss's `LossSpec.class_params`).
  """
  backbone = get_backbone(name, dtype=dtype, param_dtype=param_dtype,
                          **backbone_kwargs)
  head = EmbeddingHead(embedding_dim=embedding_dim, num_classes=num_classes,
                       class_params=class_param_shapes(class_params),
                       batch_norm=head_batch_norm, l2_normalize=l2_normalize,
                       anchor_init=anchor_init,
                       anchor_init_scale=anchor_init_scale, dtype=dtype,
                       param_dtype=param_dtype)
  return RetrievalModel(backbone=backbone, head=head)
