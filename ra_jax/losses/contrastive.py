"""Contrastive loss over all pairs of a batch (Hadsell, Chopra & LeCun, 2006)."""

from typing import Optional

import jax
import jax.numpy as jnp

from ra_jax.losses import _common

# Defaults selected on validation (docs/losses.md, "Defaults"):
POSITIVE_MARGIN = 0.162  # results/grid/tuning/contrastive/trial3
NEGATIVE_MARGIN = 0.712  # same run (unit-sphere embeddings)


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
  positives. Defaults m_+ = 0.162, m_- = 0.712,
  selected on validation on the unit sphere (POSITIVE_MARGIN; Hadsell et
  al.'s form has m_+ = 0).
  Cost O(B^2 * D).

  Args:
    embeddings: (B, D). labels: (B,) ints.
    positive_margin: m_+; positive pairs closer than this cost nothing.
    negative_margin: m_-; negative pairs farther than this cost nothing.
    squared: use squared L2 distances.
    where: optional (B,) mask; masked examples give 0 and take part in no pair.
    checks: see `class_anchor_margin_loss` (non-finite embeddings).
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
