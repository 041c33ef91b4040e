"""Triplet loss with in-batch mining: batch-all, batch-hard and semi-hard.

Batch-all and batch-hard follow Hermans, Beyer & Leibe, "In Defense of the
Triplet Loss for Person Re-Identification" (2017); semi-hard follows FaceNet
(Schroff, Kalenichenko & Philbin, CVPR 2015).
"""

import functools
from typing import Literal, Optional

import jax
import jax.numpy as jnp

from ra_jax.losses import _common

Mining = Literal["all", "hard", "semi_hard"]
MININGS = ("all", "hard", "semi_hard")

# FaceNet's constants (docs/losses.md, "Defaults"): margin 0.2 between unit
# vectors, semi-hard negatives.
MARGIN = 0.2
MINING: Mining = "semi_hard"


def _sorted_negatives(d, neg):
  """The anchor's negative distances in increasing order, then +inf padding.

  Sorting once per anchor turns the O(B^2) scans over (positive, negative)
  pairs into O(B log B) binary searches; `jnp.sort` is differentiable, so the
  selected distances carry their gradients.
  """
  return jnp.sort(jnp.where(neg, d, jnp.inf))


def _batch_all(d, pos, neg, margin):
  """Mean over the anchor's triplets with positive loss (0 if there are none).

  For a positive p, the violating negatives are those with d_n < d_p + margin:
  a prefix of the sorted negatives, of length k_p, so
  sum_n t_pn = k_p (d_p + margin) - (sum of that prefix).
  """
  negatives = _sorted_negatives(d, neg)
  prefix = jnp.concatenate([
      jnp.zeros((1,), d.dtype),
      jnp.cumsum(jnp.where(jnp.isfinite(negatives), negatives, 0.0))])
  threshold = d + margin  # per positive
  count = jnp.searchsorted(negatives, threshold, side="left")
  per_positive = count * threshold - prefix[count]
  total = jnp.sum(jnp.where(pos, per_positive, 0.0))
  return total / jnp.maximum(jnp.sum(jnp.where(pos, count, 0)), 1)


def _semi_hard(d, pos, neg, margin):
  """Mean over positives p of the loss with the semi-hard negative for (a, p)."""
  negatives = _sorted_negatives(d, neg)
  num_negatives = jnp.sum(neg)
  # First negative strictly farther than p, else the farthest negative.
  first_farther = jnp.searchsorted(negatives, d, side="right")
  chosen = negatives[jnp.where(first_farther < num_negatives, first_farther,
                               jnp.maximum(num_negatives - 1, 0))]
  loss = jnp.maximum(d - jnp.where(num_negatives > 0, chosen, 0.0) + margin,
                     0.0)
  return _common.masked_mean(loss, pos & (num_negatives > 0), axis=0)


def _batch_hard(d, pos, neg, margin):
  """Hardest positive against hardest negative; 0 without both."""
  hardest_positive = jnp.max(jnp.where(pos, d, 0.0))
  hardest_negative = jnp.min(jnp.where(neg, d, jnp.finfo(d.dtype).max))
  loss = jnp.maximum(hardest_positive - hardest_negative + margin, 0.0)
  return jnp.where(jnp.any(pos) & jnp.any(neg), loss, 0.0)


_PER_ANCHOR = {"all": _batch_all, "hard": _batch_hard, "semi_hard": _semi_hard}


def triplet_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    margin: float = MARGIN,
    mining: Mining = MINING,
    squared: bool = False,
    where: Optional[jax.Array] = None,
    checks: bool = False,
) -> jax.Array:
  r"""Triplet margin loss with in-batch mining, one value per anchor (B,).

  With d_ij = ||e_i - e_j|| (squared when ``squared``), positives
  P(i) = {j != i : y_j = y_i}, negatives N(i) = {j : y_j != y_i} and
  t_ipn = max(0, d_ip - d_in + margin):

  - ``"all"`` (batch-all): l_i = sum_{p in P(i), n in N(i)} t_ipn / #{t_ipn > 0},
    the mean over the anchor's triplets that still violate the margin.
  - ``"hard"`` (batch-hard): l_i = max(0, max_{p in P(i)} d_ip
    - min_{n in N(i)} d_in + margin).
  - ``"semi_hard"``: for each positive p, the nearest negative farther than p,
    n* = argmin {d_in : n in N(i), d_in > d_ip}, or the farthest negative when
    none is farther (FaceNet's rule, as in TensorFlow Addons);
    l_i = mean_{p in P(i)} t_{i p n*}.

  An anchor without a valid positive or negative gives 0 (never NaN).
  Defaults margin 0.2 with semi-hard mining, FaceNet's. Cost O(B^2 * D + B^2 log B) time and
  O(B^2) memory: batch-all and semi-hard sort each anchor's negatives once
  instead of scanning all B^3 triplets.

  Args:
    embeddings: (B, D). labels: (B,) ints.
    margin: the required gap between negative and positive distances.
    mining: "all", "hard" or "semi_hard".
    squared: use squared L2 distances.
    where: optional (B,) mask; masked examples give 0 and take part in no
      triplet.
    checks: see `class_anchor_margin_loss` (non-finite embeddings).

  Examples:
    Example 1's positive (0) is 0.894 away, its only negative (2) 0.632:
    0.894 - 0.632 + 0.2 = 0.462. Example 2 has no positive:

    >>> import jax.numpy as jnp
    >>> from ra_jax.losses import triplet_loss
    >>> embeddings = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    >>> print(triplet_loss(embeddings, jnp.array([0, 0, 1])).round(3))
    [0.    0.462 0.   ]
  """
  if mining not in _PER_ANCHOR:
    raise ValueError(f"mining must be one of {MININGS}, got {mining!r}")
  _common.check_hyperparameter("margin", margin, minimum=0.0)
  embeddings, labels, valid = _common.prepare_batch(embeddings, labels, where,
                                                    checks)
  positive, negative = _common.pair_masks(labels, valid)
  distances = _common.batch_distances(embeddings, squared)
  per_anchor = functools.partial(_PER_ANCHOR[mining], margin=margin)
  loss = jax.vmap(per_anchor)(distances, positive, negative)
  return jnp.where(valid, loss, 0.0)
