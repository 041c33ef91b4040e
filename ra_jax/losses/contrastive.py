"""Contrastive loss over all pairs of a batch (Hadsell, Chopra & LeCun, 2006)."""

from typing import Optional

import jax
import jax.numpy as jnp

from ra_jax.losses import _common

# Hadsell et al.'s form (no positive margin) with the negative margin of 1
# that pytorch-metric-learning's ContrastiveLoss uses (docs/losses.md,
# "Defaults").
POSITIVE_MARGIN = 0.0
NEGATIVE_MARGIN = 1.0


def contrastive_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    positive_margin: float = POSITIVE_MARGIN,
    negative_margin: float = NEGATIVE_MARGIN,
    squared: bool = False,
    where: Optional[jax.Array] = None,
    checks: bool = False,
) -> jax.Array:
  r"""Contrastive loss, one value per example, over every pair in the batch.

  With d_ij = ||e_i - e_j|| (or its square when ``squared``), positives
  P(i) = {j != i : y_j = y_i} and negatives N(i) = {j : y_j != y_i}:

  .. math::
    \ell_i = \tfrac12 \operatorname{mean}_{j \in P(i)} \max(0, d_{ij} - m_+)^2
           + \tfrac12 \operatorname{mean}_{j \in N(i)} \max(0, m_- - d_{ij})^2

  Each mean is 0 when its set is empty. Averaging positives and negatives
  separately keeps the C-1 times more numerous negatives from swamping the
  positives. Defaults m_+ = 0 (Hadsell et al.'s form) and m_- = 1.
  Cost O(B^2 * D).

  Args:
    embeddings: (B, D). labels: (B,) ints.
    positive_margin: m_+; positive pairs closer than this cost nothing.
    negative_margin: m_-; negative pairs farther than this cost nothing.
    squared: use squared L2 distances.
    where: optional (B,) mask; masked examples give 0 and take part in no pair.
    checks: see `class_anchor_margin_loss` (non-finite embeddings).

  Examples:
    >>> import jax.numpy as jnp
    >>> from ra_jax.losses import contrastive_loss
    >>> embeddings = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    >>> loss = contrastive_loss(embeddings, jnp.array([0, 0, 1]))
    >>> print([f"{value:.3f}" for value in loss])
    ['0.400', '0.468', '0.034']
  """
  _common.check_hyperparameter("positive_margin", positive_margin,
                               minimum=0.0)
  _common.check_hyperparameter("negative_margin", negative_margin,
                               minimum=0.0, inclusive=False)
  embeddings, labels, valid = _common.prepare_batch(embeddings, labels, where,
                                                    checks)
  positive, negative = _common.pair_masks(labels, valid)
  distances = _common.batch_distances(embeddings, squared)
  pull = jnp.square(jnp.maximum(distances - positive_margin, 0.0))
  push = jnp.square(jnp.maximum(negative_margin - distances, 0.0))
  loss = 0.5 * (_common.masked_mean(pull, positive, axis=1) +
                _common.masked_mean(push, negative, axis=1))
  return jnp.where(valid, loss, 0.0)
