"""The embedding head shared by every backbone, and the per-class parameters.

The class anchors (and, for the baselines, classifier weights, centers or
proxies) live in the head's parameter tree, so they are sharded, checkpointed
and restored with the rest of the model.
"""

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# The head's own layers; every other entry of its parameters is per-class.
NETWORK_LAYERS = ("projection", "bn")
ClassParams = Sequence[tuple[str, str]]


def class_param_shapes(class_params) -> tuple[tuple[str, str], ...]:
  """Normalises per-class parameters given as names (each a (C, D) matrix)
  or as a mapping / pairs name -> "matrix" | "vector" (a (C,) vector)."""
  items = (class_params.items() if isinstance(class_params, Mapping) else
           [(c, "matrix") if isinstance(c, str) else tuple(c)
            for c in class_params])
  out = tuple((str(name), str(shape)) for name, shape in items)
  for name, shape in out:
    if shape not in ("matrix", "vector"):
      raise ValueError(f"per-class parameter {name!r}: shape must be"
                       f" 'matrix' or 'vector', got {shape!r}")
    if name in NETWORK_LAYERS:
      raise ValueError(f"per-class parameter name {name!r} is taken by the"
                       " head's own layers")
  return out


class EmbeddingHead(nn.Module):
  """Features (B, F) -> embeddings (B, D), plus per-class parameters.

  Attributes:
    embedding_dim: D.
    num_classes: C, for the per-class parameters.
    class_params: the per-class parameters to create, (name, "matrix" |
      "vector") pairs, e.g. (("anchors", "matrix"),) for the class anchor
      margin loss (see `class_param_shapes`).
    batch_norm: BatchNorm on the embedding (off by default: the class anchor
      margin loss works in raw L2 space).
    l2_normalize: project embeddings onto the unit sphere (off by default).
    anchor_init: how the (C, D) class matrices start: "normal", i.i.d.
      N(0, scale^2) entries (rows of norm about scale * sqrt(D), pairwise
      distances about scale * sqrt(2D)); or "orthogonal", orthogonal rows
      of norm exactly scale * sqrt(D) (pairwise distances exactly
      scale * sqrt(2D): a configuration whose separation and norms are
      known, so a margin and a minimum norm can be set against them;
      needs C <= D); or "imprinted", "normal" here, replaced by the
      trainer before the first step with `imprinted_class_vectors` of the
      untrained network's embeddings (ra_jax/models/imprint.py).
    anchor_init_scale: the scale above.
  """
  embedding_dim: int
  num_classes: int
  class_params: ClassParams = (("anchors", "matrix"),)
  batch_norm: bool = False
  l2_normalize: bool = False
  anchor_init: str = "normal"
  anchor_init_scale: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features, train: bool = False):
    for name, shape in class_param_shapes(self.class_params):
      if shape == "matrix":
        self.param(name, self._matrix_init(),
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


  def _matrix_init(self):
    if self.anchor_init in ("normal", "imprinted"):
      return nn.initializers.normal(self.anchor_init_scale)
    if self.anchor_init != "orthogonal":
      raise ValueError(f"anchor_init must be 'normal', 'orthogonal' or"
                       f" 'imprinted', got {self.anchor_init!r}")
    if self.num_classes > self.embedding_dim:
      raise ValueError(f"anchor_init='orthogonal' needs at most as many"
                       f" classes ({self.num_classes}) as embedding"
                       f" dimensions ({self.embedding_dim})")
    return nn.initializers.orthogonal(
        self.anchor_init_scale * self.embedding_dim ** 0.5)


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
  return {name: value for name, value in params["head"].items()
          if name not in NETWORK_LAYERS}


def is_class_parameter(path: Sequence[str]) -> bool:
  """Whether the parameter at `path` (keys from the root of a
  RetrievalModel's params) is per-class."""
  return len(path) == 2 and path[0] == "head" and path[1] not in NETWORK_LAYERS
