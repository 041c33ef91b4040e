"""Classification-style baselines: softmax cross-entropy, center loss, ArcFace.

Each trains a per-class weight matrix next to the embedding network; retrieval
then ranks by L2 distance between the embeddings (before the classifier).
"""

import math
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from ra_jax.distances import cosine_similarity_matrix
from ra_jax.distances import safe_sqrt
from ra_jax.losses import _common

# The papers' constants (docs/losses.md, "Defaults"); values tuned on a
# dataset belong in configs (configs/validated.py).
CENTER_WEIGHT = 0.003  # lambda in Wen et al.'s face experiments
ARCFACE_SCALE = 64.0  # s, Deng et al.
ARCFACE_MARGIN = 0.5  # m in radians, Deng et al.


def _cross_entropy(logits, labels, valid):
  loss = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.where(valid, loss, 0.0)


def softmax_cross_entropy_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    kernel: jax.Array,
    bias: Optional[jax.Array] = None,
    *,
    where: Optional[jax.Array] = None,
    checks: bool = False,
) -> jax.Array:
  r"""Softmax cross-entropy of a linear classifier on the embeddings, (B,).

  .. math::
    z_i = W e_i + b, \qquad \ell_i = -\log \mathrm{softmax}(z_i)_{y_i}

  with kernel W (C, D) (one row per class, like the anchors) and bias b (C,).
  The standard statistical-learning baseline of the paper.

  Args:
    embeddings: (B, D) floats. labels: (B,) ints in [0, C).
    kernel: (C, D) classifier weights. bias: optional (C,).
    where: optional (B,) mask; masked examples give 0.
    checks: see `class_anchor_margin_loss`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from ra_jax.losses import softmax_cross_entropy_loss
    >>> embeddings = jnp.array([[2.0, 0.0], [0.0, 2.0]])
    >>> kernel, bias = jnp.eye(2), jnp.zeros(2)
    >>> print(softmax_cross_entropy_loss(embeddings, jnp.array([0, 1]),
    ...                                  kernel, bias).round(4))
    [0.1269 0.1269]
  """
  embeddings, labels, kernel, valid = _common.prepare_class_batch(
      embeddings, labels, "kernel", kernel, where, checks)
  logits = embeddings @ kernel.T
  if bias is not None:
    bias = jnp.asarray(bias)
    if bias.shape != (kernel.shape[0],):
      raise ValueError(f"`bias` must have shape ({kernel.shape[0]},) to match"
                       f" `kernel` {kernel.shape}, got {bias.shape}")
    logits = logits + bias.astype(logits.dtype)
  return _cross_entropy(logits, labels, valid)


def center_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    centers: jax.Array,
    kernel: jax.Array,
    bias: Optional[jax.Array] = None,
    *,
    center_weight: float = CENTER_WEIGHT,
    where: Optional[jax.Array] = None,
    checks: bool = False,
) -> jax.Array:
  r"""Softmax cross-entropy plus the center loss (Wen et al., ECCV 2016), (B,).

  .. math::
    \ell_i = -\log \mathrm{softmax}(W e_i + b)_{y_i}
             + \lambda \tfrac12 \lVert e_i - c_{y_i} \rVert^2

  Centers c (C, D) are ordinary parameters learned by the optimizer (the
  paper's separate center-update rule with rate alpha corresponds to giving
  them their own learning rate). Unlike class anchors there is no repeller:
  the softmax term keeps classes apart. Default lambda = 0.003, the value
  of the paper's face experiments (it sweeps lambda and finds it
  data-dependent).

  Examples:
    The cross-entropy above plus lambda x 1/2 ||e - c||^2 = 0.003 x 2:

    >>> import jax.numpy as jnp
    >>> from ra_jax.losses import center_loss
    >>> embeddings = jnp.array([[2.0, 0.0], [0.0, 2.0]])
    >>> centers, kernel, bias = jnp.zeros((2, 2)), jnp.eye(2), jnp.zeros(2)
    >>> print(center_loss(embeddings, jnp.array([0, 1]), centers, kernel,
    ...                   bias).round(4))
    [0.1329 0.1329]
  """
  _common.check_hyperparameter("center_weight", center_weight, minimum=0.0)
  ce = softmax_cross_entropy_loss(embeddings, labels, kernel, bias,
                                  where=where, checks=checks)
  embeddings, labels, centers, valid = _common.prepare_class_batch(
      embeddings, labels, "centers", centers, where, checks)
  if centers.shape[0] != jnp.shape(kernel)[0]:
    raise ValueError(f"`centers` {centers.shape} and `kernel`"
                     f" {jnp.shape(kernel)} must have one row per class each")
  pull = _common.half_squared_distance_to_class(embeddings, labels, centers)
  return ce + jnp.where(valid, center_weight * pull, 0.0)


def arcface_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    weights: jax.Array,
    *,
    scale: float = ARCFACE_SCALE,
    margin: float = ARCFACE_MARGIN,
    where: Optional[jax.Array] = None,
    checks: bool = False,
) -> jax.Array:
  r"""Additive angular margin loss (ArcFace; Deng et al., CVPR 2019), (B,).

  With unit vectors \hat e_i and \hat w_c and cos(theta_ic) = \hat e_i . \hat w_c:

  .. math::
    z_{ic} = s \cos(\theta_{ic} + m\,[c = y_i]), \qquad
    \ell_i = -\log \mathrm{softmax}(z_i)_{y_i}

  When theta + m would pass pi, the target logit continues as the linear
  ``cos(theta) - m sin(m)`` (as in the reference implementation) so it stays
  monotonic in theta. ``margin=0`` gives the normalized-softmax (cosine)
  loss of Zhai & Wu (2018) with temperature 1/s. Defaults s = 64, m = 0.5,
  the paper's.
  Zero embeddings or weights are safe: their cosine is 0.

  Args:
    embeddings: (B, D). labels: (B,). weights: (C, D) class weight vectors.
    scale: s. margin: m in radians, in [0, pi). where: optional (B,) mask.
    checks: see `class_anchor_margin_loss`.

  Examples:
    Each embedding on its class's weight vector (theta = 0): the target
    logit is s cos(m) = 4 cos(0.5) = 3.51 against 0, a loss of
    log(1 + e^-3.51):

    >>> import jax.numpy as jnp
    >>> from ra_jax.losses import arcface_loss
    >>> embeddings = jnp.array([[2.0, 0.0], [0.0, 2.0]])
    >>> print(arcface_loss(embeddings, jnp.array([0, 1]), jnp.eye(2),
    ...                    scale=4.0, margin=0.5).round(4))
    [0.0294 0.0294]
  """
  _common.check_hyperparameter("scale", scale, minimum=0.0, inclusive=False)
  _common.check_hyperparameter("margin", margin, minimum=0.0)
  if _common.concrete(margin) is not None and float(margin) >= math.pi:
    raise ValueError(f"`margin` is an angle in [0, pi), got {margin}")
  embeddings, labels, weights, valid = _common.prepare_class_batch(
      embeddings, labels, "weights", weights, where, checks)
  cosine = cosine_similarity_matrix(embeddings, weights)  # (B, C)
  target_cos = jnp.take_along_axis(cosine, labels[:, None], axis=1)[:, 0]
  sine = safe_sqrt(jnp.clip(1.0 - jnp.square(target_cos), 0.0, 1.0))
  with_margin = target_cos * math.cos(margin) - sine * math.sin(margin)
  # Past theta = pi - m, cos(theta + m) would rise again; continue linearly.
  target_logit = jnp.where(target_cos > math.cos(math.pi - margin), with_margin,
                           target_cos - margin * math.sin(margin))
  is_target = jax.nn.one_hot(labels, weights.shape[0], dtype=bool)
  logits = scale * jnp.where(is_target, target_logit[:, None], cosine)
  return _cross_entropy(logits, labels, valid)
