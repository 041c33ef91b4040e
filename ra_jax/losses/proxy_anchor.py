"""Proxy-anchor loss (Kim, Kim, Cho & Kwak, "Proxy Anchor Loss for Deep Metric
Learning", CVPR 2020)."""

from typing import Optional

import jax
import jax.numpy as jnp

from ra_jax.distances import cosine_similarity_matrix
from ra_jax.losses import _common

# Defaults selected on validation (docs/losses.md, "Defaults"):
SCALE = 22.8  # results/grid/tuning/proxy_anchor/trial4
MARGIN = 0.178  # same run


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
  ``loss.sum() / where.sum()``) is L. Defaults alpha = 22.8, delta = 0.178,
  selected on validation (SCALE, MARGIN; the paper's are 32 and 0.1).

  Args:
    embeddings: (B, D). labels: (B,) ints in [0, C). proxies: (C, D).
    scale: alpha (> 0). margin: delta (>= 0). where: optional (B,) mask.
    checks: see `class_anchor_margin_loss`.
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
