"""Triplet loss with in-batch mining: batch-all, batch-hard and semi-hard.

Batch-all and batch-hard follow Hermans, Beyer & Leibe, "In Defense of the
Triplet Loss for Person Re-Identification" (2017); semi-hard follows FaceNet
(Schroff, Kalenichenko & Philbin, CVPR 2015).
"""

from typing import Literal, Optional

import jax
import jax.numpy as jnp

from ra_jax.losses import _common

Mining = Literal["all", "hard", "semi_hard"]
MININGS = ("all", "hard", "semi_hard")

# Batch-all and semi-hard look at (positive, negative) pairs per anchor:
# O(B^2) values per anchor. Anchors are processed in chunks so that at most
# this many values are live at once (B = 1024 would need 4 GiB in one go).
_MAX_TRIPLET_VALUES = 1 << 24


def _batch_all(d, pos, neg, margin):
  """Mean over the anchor's triplets with positive loss (0 if there are none)."""
  loss = jnp.maximum(d[:, None] - d[None, :] + margin, 0.0)  # (p, n)
  triplet = pos[:, None] & neg[None, :]
  active = triplet & (loss > 0)
  return jnp.sum(jnp.where(triplet, loss, 0.0)) / jnp.maximum(
      jnp.sum(active), 1)


def _semi_hard(d, pos, neg, margin):
  """Mean over positives p of the loss with the semi-hard negative for (a, p)."""
  big = jnp.finfo(d.dtype).max
  farther = neg[None, :] & (d[None, :] > d[:, None])  # (p, n)
  semi_hard = jnp.min(jnp.where(farther, d[None, :], big), axis=1)
  # No negative is farther than p: fall back to the farthest negative.
  fallback = jnp.max(jnp.where(neg, d, 0.0))
  chosen = jnp.where(jnp.any(farther, axis=1), semi_hard, fallback)
  loss = jnp.maximum(d - chosen + margin, 0.0)
  return _common.masked_mean(loss, pos & jnp.any(neg), axis=0)


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
    margin: float = 0.2,
    mining: Mining = "semi_hard",
    squared: bool = False,
    where: Optional[jax.Array] = None,
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
  Default margin 0.2 (FaceNet's value). Cost O(B^2 * D + B^3); the B^3 part is
  computed in chunks of anchors to bound memory.

  Args:
    embeddings: (B, D). labels: (B,) ints.
    margin: the required gap between negative and positive distances.
    mining: "all", "hard" or "semi_hard".
    squared: use squared L2 distances.
    where: optional (B,) mask; masked examples give 0 and take part in no
      triplet.
  """
  if mining not in _PER_ANCHOR:
    raise ValueError(f"mining must be one of {MININGS}, got {mining!r}")
  embeddings, labels, valid = _common.prepare_batch(embeddings, labels, where)
  positive, negative = _common.pair_masks(labels, valid)
  distances = _common.batch_distances(embeddings, squared)
  per_anchor = _PER_ANCHOR[mining]
  batch_size = embeddings.shape[0]
  chunk = max(1, min(batch_size, _MAX_TRIPLET_VALUES // max(batch_size**2, 1)))
  loss = jax.lax.map(lambda row: per_anchor(*row, margin),
                     (distances, positive, negative), batch_size=chunk)
  return jnp.where(valid, loss, 0.0)
