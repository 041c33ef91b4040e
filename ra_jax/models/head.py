"""The embedding head shared by every backbone, and the per-class parameters.

The class anchors (and, for the baselines, classifier weights, centers or
proxies) live in the head's parameter tree, so they are sharded, checkpointed
and restored with the rest of the model.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Per-class parameter name -> shape kind. Matrices are (C, D); vectors (C,).
CLASS_PARAMS = {
    "anchors": "matrix",  # class anchor margin loss
    "kernel": "matrix",  # softmax CE / center / ArcFace classifier weights
    "bias": "vector",  # softmax CE classifier bias
    "centers": "matrix",  # center loss
    "proxies": "matrix",  # proxy-anchor loss
}


class EmbeddingHead(nn.Module):
  """Features (B, F) -> embeddings (B, D), plus per-class parameters.

  Attributes:
    embedding_dim: D.
    num_classes: C, for the per-class parameters.
    class_params: which per-class parameters to create (keys of CLASS_PARAMS),
      e.g. ("anchors",) for the class anchor margin loss.
    batch_norm: BatchNorm on the embedding (off by default: the class anchor
      margin loss works in raw L2 space).
    l2_normalize: project embeddings onto the unit sphere (off by default).
    anchor_init_scale: class matrices start as N(0, scale^2); with scale 1 and
      D >= 16, anchors start far more than 2 * margin (default 2) apart.
  """
  embedding_dim: int
  num_classes: int
  class_params: Sequence[str] = ("anchors",)
  batch_norm: bool = False
  l2_normalize: bool = False
  anchor_init_scale: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features, train: bool = False):
    for name in self.class_params:
      if name not in CLASS_PARAMS:
        raise ValueError(f"unknown per-class parameter {name!r}; known:"
                         f" {sorted(CLASS_PARAMS)}")
      if CLASS_PARAMS[name] == "matrix":
        self.param(name, nn.initializers.normal(self.anchor_init_scale),
                   (self.num_classes, self.embedding_dim), self.param_dtype)
      else:
        self.param(name, nn.initializers.zeros, (self.num_classes,),
                   self.param_dtype)
    x = nn.Dense(self.embedding_dim, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="projection")(features)
    if self.batch_norm:
      x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype,
                       param_dtype=self.param_dtype, name="bn")(x)
    if self.l2_normalize:
      x = x * jax.lax.rsqrt(
          jnp.maximum(jnp.sum(jnp.square(x.astype(jnp.float32)), -1,
                              keepdims=True), 1e-12)).astype(x.dtype)
    return x


class RetrievalModel(nn.Module):
  """A backbone and an embedding head: images -> embeddings (B, D).

  The per-class parameters are at `params["head"][name]`; see
  `class_parameters`.
  """
  backbone: nn.Module
  head: EmbeddingHead

  def __call__(self, images, train: bool = False):
    return self.head(self.backbone(images, train=train), train=train)


def class_parameters(params: dict) -> dict[str, jax.Array]:
  """The per-class parameters (anchors, kernel, ...) of a RetrievalModel."""
  head = params["head"]
  return {name: head[name] for name in CLASS_PARAMS if name in head}
