"""ResNet v1.5 (torchvision's layout) in Flax linen, with ImageNet and CIFAR stems.

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016); the
stride of a bottleneck block sits on its 3x3 convolution (v1.5), as in
torchvision, so torchvision checkpoints load 1:1 (`ra_jax.models.pretrained`).
Padding is explicit and symmetric, as in PyTorch ('SAME' would pad
asymmetrically on stride 2).

BatchNorm uses the batch's statistics when `train=True` and the running
averages otherwise. Under `jax.jit` with the batch sharded over a device mesh,
the statistics are those of the *global* batch: the mean over the sharded
batch axis is one array reduction, and XLA inserts the cross-device sums.
"""

import functools
from typing import Any, Callable, Literal, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any
Stem = Literal["imagenet", "cifar"]

# depth -> (blocks per stage, bottleneck?)
DEPTHS = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
}


def _pad(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
  return ((kernel // 2, kernel // 2),) * 2


class _ResidualBlock(nn.Module):
  """Fields shared by both block kinds: conv/norm are partially applied
  module constructors carrying the dtype and train/eval settings."""
  filters: int
  strides: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]


class BasicBlock(_ResidualBlock):
  """Two 3x3 convolutions and an identity (or 1x1 projection) shortcut."""

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.filters, (3, 3), (self.strides,) * 2, padding=_pad(3),
                  name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.filters, (3, 3), padding=_pad(3), name="conv2")(y)
    y = self.norm(name="bn2")(y)
    return nn.relu(y + _shortcut(self, x, y.shape[-1]))


class Bottleneck(_ResidualBlock):
  """1x1 reduce, 3x3 (strided), 1x1 expand by 4, and the shortcut."""

  @nn.compact
  def __call__(self, x):
    y = nn.relu(self.norm(name="bn1")(
        self.conv(self.filters, (1, 1), name="conv1")(x)))
    y = self.conv(self.filters, (3, 3), (self.strides,) * 2, padding=_pad(3),
                  name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.conv(self.filters * 4, (1, 1), name="conv3")(y)
    y = self.norm(name="bn3")(y)
    return nn.relu(y + _shortcut(self, x, y.shape[-1]))


def _shortcut(block, x, out_channels):
  if x.shape[-1] == out_channels and block.strides == 1:
    return x
  x = block.conv(out_channels, (1, 1), (block.strides,) * 2,
                 name="downsample_conv")(x)
  return block.norm(name="downsample_bn")(x)


class ResNet(nn.Module):
  """ResNet backbone: images (B, H, W, 3) -> pooled features (B, F).

  With `num_classes` set, a final linear classifier `fc` gives logits
  (B, num_classes) instead (torchvision's architecture, for parameter counts
  and pretrained checkpoints).

  Attributes:
    stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    bottleneck: Bottleneck (ResNet-50 and deeper) or BasicBlock.
    stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool, for >= 64 px) or "cifar"
      (3x3/1 conv, no pool, for 32 px).
    width: channels of the first stage (64 in the paper; smaller for tests).
    num_classes: optional classifier size.
    dtype: computation dtype (e.g. bfloat16); param_dtype: storage dtype.
  """
  stage_sizes: Sequence[int]
  bottleneck: bool = False
  stem: Stem = "imagenet"
  width: int = 64
  num_classes: Optional[int] = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  bn_momentum: float = 0.9  # PyTorch's momentum=0.1 in Flax's convention

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.stem not in ("imagenet", "cifar"):
      raise ValueError(f"stem must be 'imagenet' or 'cifar', got {self.stem!r}")
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=1e-5,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    x = jnp.asarray(x, self.dtype)
    if self.stem == "imagenet":
      x = conv(self.width, (7, 7), (2, 2), padding=_pad(7), name="conv1")(x)
      x = nn.relu(norm(name="bn1")(x))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=_pad(3))
    else:
      x = conv(self.width, (3, 3), padding=_pad(3), name="conv1")(x)
      x = nn.relu(norm(name="bn1")(x))
    block_cls = Bottleneck if self.bottleneck else BasicBlock
    for stage, num_blocks in enumerate(self.stage_sizes):
      for index in range(num_blocks):
        strides = 2 if stage > 0 and index == 0 else 1
        x = block_cls(self.width * 2**stage, strides, conv, norm,
                      name=f"layer{stage + 1}_{index}")(x)
    x = jnp.mean(x, axis=(1, 2))
    if self.num_classes is not None:
      x = nn.Dense(self.num_classes, dtype=self.dtype,
                   param_dtype=self.param_dtype, name="fc")(x)
    return x


def resnet(depth: int, **kwargs) -> ResNet:
  """ResNet-`depth` for depth in DEPTHS; kwargs go to `ResNet`."""
  if depth not in DEPTHS:
    raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got"
                     f" {depth}")
  stage_sizes, bottleneck = DEPTHS[depth]
  return ResNet(stage_sizes=stage_sizes, bottleneck=bottleneck, **kwargs)
