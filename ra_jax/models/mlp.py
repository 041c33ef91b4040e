"""A multilayer perceptron backbone: flattened pixels -> features.

The cheapest backbone there is: for tiny inputs (8x8 digits), linear-probe
style baselines, and tests that exercise the trainer rather than a network.
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


class MLP(nn.Module):
  """images (B, H, W, C) -> features (B, width), or logits with num_classes.

  Attributes:
    width: units of each hidden layer. depth: hidden layers (ReLU).
    num_classes: optional final linear classifier `fc`.
    dtype: computation dtype; param_dtype: storage dtype.
  """
  width: int = 256
  depth: int = 2
  num_classes: Optional[int] = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no BatchNorm or dropout
    x = jnp.asarray(x, self.dtype).reshape(x.shape[0], -1)
    for i in range(self.depth):
      x = nn.relu(nn.Dense(self.width, dtype=self.dtype,
                           param_dtype=self.param_dtype, name=f"dense{i}")(x))
    if self.num_classes is not None:
      x = nn.Dense(self.num_classes, dtype=self.dtype,
                   param_dtype=self.param_dtype, name="fc")(x)
    return x
