"""Proxy-anchor loss (Kim, Kim, Cho & Kwak, "Proxy Anchor Loss for Deep Metric
Learning", CVPR 2020)."""

from typing import Optional

import jax
import jax.numpy as jnp

from ra_jax.distances import cosine_similarity_matrix
from ra_jax.losses import _common

# The paper's constants (docs/losses.md, "Defaults"):
SCALE = 32.0  # alpha
MARGIN = 0.1  # delta


def _log1p_sum_exp(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """log(1 + sum_{mask} exp(logits)) along axis 0, stable, 0 for an empty mask."""
  zeros = jnp.zeros((1,) + logits.shape[1:], logits.dtype)
  padded = jnp.concatenate([zeros, logits], axis=0)
  keep = jnp.concatenate([jnp.ones_like(zeros, bool), mask], axis=0)
  return jax.nn.logsumexp(padded, axis=0, where=keep)


def proxy_anchor_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    proxies: jax.Array,
    *,
    scale: float = SCALE,
    margin: float = MARGIN,
    where: Optional[jax.Array] = None,
    checks: bool = False,
) -> jax.Array:
  r"""Proxy-anchor loss, a batch-level loss copied onto each example (B,).

  With cosine similarities s(x, p) between embeddings and proxies (C, D), the
  proxies P^+ that have at least one positive in the batch, X_p^+ the batch
  examples of p's class and X_p^- the others:

  .. math::
    L = \frac{1}{|P^+|} \sum_{p \in P^+} \log\Big(1 + \sum_{x \in X_p^+}
          e^{-\alpha (s(x,p) - \delta)}\Big)
      + \frac{1}{|P|} \sum_{p \in P} \log\Big(1 + \sum_{x \in X_p^-}
          e^{\alpha (s(x,p) + \delta)}\Big)

  Every valid example carries L, so ``loss.mean()`` (or
  ``loss.sum() / where.sum()``) is L. Defaults alpha = 32, delta = 0.1, the
  paper's.

  Args:
    embeddings: (B, D). labels: (B,) ints in [0, C). proxies: (C, D).
    scale: alpha (> 0). margin: delta (>= 0). where: optional (B,) mask.
    checks: see `class_anchor_margin_loss`.

  Examples:
    A batch-level loss: every example carries the same value.

    >>> import jax.numpy as jnp
    >>> from ra_jax.losses import proxy_anchor_loss
    >>> embeddings = jnp.array([[2.0, 0.0], [0.0, 2.0]])
    >>> print(proxy_anchor_loss(embeddings, jnp.array([0, 1]),
    ...                         jnp.eye(2)).round(2))
    [3.24 3.24]
  """
  _common.check_hyperparameter("scale", scale, minimum=0.0, inclusive=False)
  _common.check_hyperparameter("margin", margin, minimum=0.0)
  embeddings, labels, proxies, valid = _common.prepare_class_batch(
      embeddings, labels, "proxies", proxies, where, checks)
  similarity = cosine_similarity_matrix(embeddings, proxies)  # (B, C)
  is_class = jax.nn.one_hot(labels, proxies.shape[0], dtype=bool)
  positive = is_class & valid[:, None]
  negative = ~is_class & valid[:, None]
  pull = _log1p_sum_exp(-scale * (similarity - margin), positive)  # (C,)
  push = _log1p_sum_exp(scale * (similarity + margin), negative)  # (C,)
  has_positive = jnp.any(positive, axis=0)
  loss = (_common.masked_mean(pull, has_positive, axis=0) +
          jnp.mean(push))
  return jnp.where(valid, loss, 0.0)
