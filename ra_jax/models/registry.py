"""Models by name, so configs can say `model.name = "resnet18_cifar"`.

Names: `mlp` (flattened pixels, two 256-unit ReLU layers; `width=`,
`depth=`), `resnet{18,34,50,101,152}` (ImageNet stem, for >= 64 px images),
`resnet{depth}_cifar` (CIFAR stem, for 32 px), and `vit_{ti,s,b}{patch}`
(e.g. `vit_s16` at 224 px, `vit_s8` at 64 px, `vit_s4` at 32 px; pass
`image_size=` for other sizes).
"""

import re
from typing import Any, Optional

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
_RESNET = re.compile(r"resnet(\d+)(_cifar)?")
_VIT = re.compile(r"vit_(ti|s|b)(\d+)")


def model_names() -> list[str]:
  """The standard names (any depth in DEPTHS / ViT patch size also works)."""
  names = ["mlp"]
  names += [f"resnet{d}{s}" for d in resnet_lib.DEPTHS for s in ("", "_cifar")]
  names += [f"vit_{size}{p}" for size in vit_lib.SIZES for p in (16, 8, 4)]
  return names


def get_backbone(name: str, *, num_classes: Optional[int] = None,
                 dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 **kwargs) -> nn.Module:
  """The backbone called `name`: images -> features, or logits with
  `num_classes`. kwargs go to `MLP` (width, depth), `ResNet` (e.g. width)
  or `ViT` (e.g. image_size, pool, depth)."""
  common = dict(num_classes=num_classes, dtype=dtype, param_dtype=param_dtype)
  if name == "mlp":
    return mlp_lib.MLP(**common, **kwargs)
  match = _RESNET.fullmatch(name)
  if match and int(match.group(1)) in resnet_lib.DEPTHS:
    stem = "cifar" if match.group(2) else "imagenet"
    return resnet_lib.resnet(int(match.group(1)), stem=stem, **common,
                             **kwargs)
  match = _VIT.fullmatch(name)
  if match:
    patch = int(match.group(2))
    image_size = kwargs.pop("image_size", VIT_DEFAULT_IMAGE_SIZE.get(patch))
    if image_size is None:
      raise ValueError(f"model {name!r}: pass image_size= (no default for"
                       f" patch size {patch})")
    return vit_lib.vit(match.group(1), patch, image_size, **common, **kwargs)
  raise ValueError(f"unknown model name {name!r}; known names:"
                   f" {', '.join(model_names())}")


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
