"""Vision Transformer (Dosovitskiy et al., ICLR 2021) in Flax linen.

Parameter layout and numerics follow timm's `VisionTransformer` (fused qkv
projection with bias, pre-norm blocks, LayerNorm eps 1e-6, exact GELU), so
timm checkpoints load 1:1 (`ra_jax.models.pretrained`).
"""

from typing import Any, Literal, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Pool = Literal["token", "gap"]

# name -> (width, depth, heads, mlp_dim)
SIZES = {
    "ti": (192, 12, 3, 768),
    "s": (384, 12, 6, 1536),
    "b": (768, 12, 12, 3072),
}


def interpolate_pos_embed(pos_embed: jax.Array, new_grid: tuple[int, int],
                          num_prefix_tokens: int = 1) -> jax.Array:
  """Resizes learned position embeddings (1, P + n, W) to a new patch grid.

  The prefix (class token) embeddings are kept; the grid ones are resized
  bicubically, so a model trained at one image size can run at another.
  """
  prefix = pos_embed[:, :num_prefix_tokens]
  grid = pos_embed[:, num_prefix_tokens:]
  old = int(round(grid.shape[1]**0.5))
  if old * old != grid.shape[1]:
    raise ValueError(f"position embeddings hold {grid.shape[1]} grid tokens,"
                     " which is not a square grid")
  if (old, old) == tuple(new_grid):
    return pos_embed
  grid = grid.reshape(1, old, old, -1)
  grid = jax.image.resize(grid, (1, *new_grid, grid.shape[-1]), "bicubic")
  return jnp.concatenate(
      [prefix, grid.reshape(1, -1, grid.shape[-1]).astype(pos_embed.dtype)],
      axis=1)


class Attention(nn.Module):
  """Multi-head self-attention with one fused qkv projection (timm layout)."""
  heads: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    batch, tokens, width = x.shape
    qkv = nn.Dense(3 * width, dtype=self.dtype, param_dtype=self.param_dtype,
                   name="qkv")(x)
    qkv = qkv.reshape(batch, tokens, 3, self.heads, width // self.heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, T, H, hd)
    out = jax.nn.dot_product_attention(q, k, v)
    return nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="proj")(out.reshape(batch, tokens, width))


class EncoderBlock(nn.Module):
  """x + Attn(LN(x)), then x + MLP(LN(x)) with exact GELU."""
  heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = nn.LayerNorm(epsilon=1e-6, name="norm1", **kw)(x)
    x = x + Attention(self.heads, name="attn", **kw)(y)
    y = nn.LayerNorm(epsilon=1e-6, name="norm2", **kw)(x)
    y = nn.Dense(self.mlp_dim, name="fc1", **kw)(y)
    y = nn.Dense(x.shape[-1], name="fc2", **kw)(nn.gelu(y, approximate=False))
    return x + y


class ViT(nn.Module):
  """ViT backbone: images (B, H, W, 3) -> features (B, width).

  Attributes:
    patch_size: side of the square patches (16 at 224 px, 4 at 32 px, 8 at
      64 px).
    image_size: side of the square input the position embeddings are made for.
    width, depth, heads, mlp_dim: the transformer's size (see SIZES).
    pool: "token" (class token, as in the paper) or "gap" (mean of the patch
      tokens, no class token).
    num_classes: optional linear classifier `head` on top.
    dtype: computation dtype; param_dtype: storage dtype.
  """
  patch_size: int
  image_size: int
  width: int
  depth: int
  heads: int
  mlp_dim: int
  pool: Pool = "token"
  num_classes: Optional[int] = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no dropout or batch statistics
    if self.pool not in ("token", "gap"):
      raise ValueError(f"pool must be 'token' or 'gap', got {self.pool!r}")
    if self.image_size % self.patch_size:
      raise ValueError(f"image_size {self.image_size} is not a multiple of"
                       f" patch_size {self.patch_size}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = jnp.asarray(x, self.dtype)
    x = nn.Conv(self.width, (self.patch_size,) * 2, (self.patch_size,) * 2,
                padding="VALID", name="patch_embed", **kw)(x)
    batch, gh, gw, _ = x.shape
    x = x.reshape(batch, gh * gw, self.width)
    grid = self.image_size // self.patch_size
    prefix = 1 if self.pool == "token" else 0
    if prefix:
      cls = self.param("cls_token", nn.initializers.zeros,
                       (1, 1, self.width), self.param_dtype)
      x = jnp.concatenate(
          [jnp.broadcast_to(cls.astype(x.dtype), (batch, 1, self.width)), x],
          axis=1)
    pos = self.param("pos_embed", nn.initializers.normal(0.02),
                     (1, grid * grid + prefix, self.width), self.param_dtype)
    if (gh, gw) != (grid, grid):  # another image size than trained for
      pos = interpolate_pos_embed(pos, (gh, gw), prefix)
    x = x + pos.astype(x.dtype)
    for i in range(self.depth):
      x = EncoderBlock(self.heads, self.mlp_dim, name=f"blocks_{i}", **kw)(x)
    x = nn.LayerNorm(epsilon=1e-6, name="norm", **kw)(x)
    x = x[:, 0] if prefix else jnp.mean(x, axis=1)
    if self.num_classes is not None:
      x = nn.Dense(self.num_classes, name="head", **kw)(x)
    return x


def vit(size: str, patch_size: int, image_size: int, **kwargs) -> ViT:
  """ViT-{Ti,S,B}/patch_size for `image_size` inputs; kwargs go to `ViT` and
  override the size's own fields (e.g. depth=2 for a shallow test model)."""
  if size not in SIZES:
    raise ValueError(f"ViT size must be one of {sorted(SIZES)}, got {size!r}")
  width, depth, heads, mlp_dim = SIZES[size]
  shape = dict(width=width, depth=depth, heads=heads, mlp_dim=mlp_dim)
  return ViT(patch_size=patch_size, image_size=image_size,
             **{**shape, **kwargs})
