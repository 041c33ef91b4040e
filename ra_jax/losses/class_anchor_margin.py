"""The class anchor margin (repeller-attractor) loss.

Ghiță & Ionescu, "Class Anchor Margin Loss for Content-Based Image Retrieval",
arXiv 2306.00630 (2023). Every class y owns a learnable anchor c_y in the
embedding space; embeddings are pulled onto their anchor, anchors are pushed at
least 2*margin apart, and anchors are kept at norm >= min_norm so the whole
configuration cannot shrink to the origin.
"""

import math
from typing import Optional

import jax
import jax.numpy as jnp

from ra_jax.distances import nearest
from ra_jax.distances import pairwise_distances
from ra_jax.distances import safe_norm
from ra_jax.losses import _common
from ra_jax.losses import neighbor_repulsion
from ra_jax.losses.neighbor_repulsion import RepulsionNeighbors


def default_margin(dim: int) -> float:
  """m = sqrt(D / 2): half the typical distance, sqrt(2D), between two
  anchors drawn from N(0, I_D) (how `models.EmbeddingHead` starts them)."""
  return math.sqrt(dim / 2.0)


def default_min_norm(dim: int) -> float:
  """p = sqrt(D): the typical norm of an anchor drawn from N(0, I_D)."""
  return math.sqrt(dim)


def resolved_margin(margin: Optional[float], dim: int) -> float:
  """The margin m a loss call uses: `margin`, or `default_margin(dim)`."""
  return default_margin(dim) if margin is None else margin


def _margins(margin, min_norm, dim: int) -> tuple[float, float]:
  """(m, p), each its scale-aware default when None."""
  return (resolved_margin(margin, dim),
          default_min_norm(dim) if min_norm is None else min_norm)


def _check_hyperparameters(margin, min_norm, repel_weight, norm_weight,
                           attract_weight=1.0, push_weight=0.0):
  if margin is not None:
    _common.check_hyperparameter("margin", margin, minimum=0.0,
                                 inclusive=False)
  if min_norm is not None:
    _common.check_hyperparameter("min_norm", min_norm, minimum=0.0)
  _common.check_hyperparameter("repel_weight", repel_weight, minimum=0.0)
  _common.check_hyperparameter("norm_weight", norm_weight, minimum=0.0)
  _common.check_hyperparameter("attract_weight", attract_weight, minimum=0.0)
  _common.check_hyperparameter("push_weight", push_weight, minimum=0.0)


def _repel_and_norm(anchors: jax.Array, margin: float, min_norm: float,
                    neighbors: Optional[RepulsionNeighbors] = None):
  """Anchor-only terms: (repel, norm, min inter-anchor distance, norms)."""
  margin = jnp.asarray(margin, anchors.dtype)
  repel, min_distance = neighbor_repulsion.repulsion(anchors, margin,
                                                     neighbors)
  norms = safe_norm(anchors)  # (C,)
  norm = jnp.sum(jnp.maximum(min_norm - norms, 0.0))
  return repel, norm, min_distance, norms


def _push_on(push_weight) -> bool:
  """Whether P is computed: always for a traced weight, else unless 0."""
  return not (isinstance(push_weight, (int, float)) and push_weight == 0)


def _push(embeddings: jax.Array, labels: jax.Array, anchors: jax.Array,
          margin: float) -> jax.Array:
  """P_i = 1/2 max(0, ||e_i - c_{y_i}|| + m - min_{y != y_i} ||e_i - c_y||)^2,
  (B,); 0 when there is a single class."""
  own = safe_norm(embeddings - anchors[labels])
  others = jnp.where(jax.nn.one_hot(labels, anchors.shape[0], dtype=bool),
                     jnp.inf, pairwise_distances(embeddings, anchors))
  return 0.5 * jnp.square(jnp.maximum(own + margin - jnp.min(others, -1),
                                      0.0))


def class_anchor_margin_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    anchors: jax.Array,
    *,
    margin: Optional[float] = None,
    min_norm: Optional[float] = None,
    repel_weight: float = 1.0,
    norm_weight: float = 1.0,
    attract_weight: float = 1.0,
    push_weight: float = 0.0,
    where: Optional[jax.Array] = None,
    checks: bool = False,
    neighbors: Optional[RepulsionNeighbors] = None,
) -> jax.Array:
  r"""Class anchor margin loss, one value per example.

  With embeddings e (B, D), integer labels y (B,) in [0, C) and anchors c (C, D):

  .. math::
    A_i &= \tfrac12 \lVert e_i - c_{y_i} \rVert^2 \\
    R &= \tfrac12 \sum_{y \ne y'} \max(0, 2m - \lVert c_y - c_{y'} \rVert)^2
        \quad\text{(ordered pairs)} \\
    N &= \sum_y \max(0, p - \lVert c_y \rVert) \\
    P_i &= \tfrac12 \max(0, \lVert e_i - c_{y_i} \rVert + m
        - \min_{y \ne y_i} \lVert e_i - c_y \rVert)^2 \\
    \ell_i &= w_A A_i + w_R R + w_N N + w_P P_i

  so with w_P = 0 (the default) ``loss.mean()`` is the paper's batch loss.
  P is ours, not the paper's: A and R give an embedding no gradient that
  depends on the other classes' anchors (once the anchors are 2m apart R is
  0), so an embedding nearer a wrong anchor is pulled exactly like one as far
  from its own anchor on the right side; P pushes it until it is m nearer
  its own anchor than any other (docs/losses.md, "Gradients"). With ``where``, masked
  examples give exactly 0 and ``loss.sum() / where.sum()`` is the loss over
  the valid examples (R and N are copied onto each valid example).

  Inputs of any float dtype are computed in at least float32. Gradients are
  finite everywhere, including coincident anchors, anchors at the origin and
  zero embeddings (the norm's gradient at 0 is taken as 0). Masked rows are
  replaced before any arithmetic, so whatever they hold reaches neither the
  values nor the gradients. A non-finite anchor makes every value NaN.
  Forward- and reverse-mode differentiation both work (jvp, jacfwd, grad).

  Cost: O(B*D) for the attractor and O(C^2*D) for the repeller (one (C, D) x
  (D, C) matrix product), independent of the number of pairs in the batch;
  with w_P > 0, O(B*C*D) more for P (one (B, D) x (D, C) product). With
  ``neighbors`` (a neighbour list, `neighbor_repulsion`) the repeller costs
  O(C*D + K*D) for K listed pairs, with the same value and gradient: where
  the list does not hold for these anchors it computes every pair.

  Validation (docs/losses.md, "Bad input"): shapes, dtypes and
  hyperparameter ranges always raise a ValueError naming the argument;
  label ranges and non-finite inputs do so when the call is eager, and
  under jit only with ``checks=True`` inside `jax.experimental.checkify`.

  Defaults: the paper states no constants. m and p set the scale of the
  anchor configuration (it shrinks until the closest anchors are 2m apart;
  docs/losses.md, "Gradients"), so the defaults follow the embedding size:
  m = sqrt(D/2) and p = sqrt(D), the typical half-distance and norm of
  anchors drawn from N(0, I_D), so that all three terms act from the first
  step on such anchors (`default_margin`, `default_min_norm`). Values tuned
  on a dataset belong in configs (configs/validated.py).

  Args:
    embeddings: (B, D) float embeddings.
    labels: (B,) integer class ids in [0, C).
    anchors: (C, D) float class anchors (learnable parameters).
    margin: m; anchors are pushed until every pair is >= 2m apart (None:
      sqrt(D / 2)).
    min_norm: p; anchors with norm below p are pushed outward (None:
      sqrt(D)).
    repel_weight: w_R, weight of the repeller (1 in the paper).
    norm_weight: w_N, weight of the minimum-norm term (1 in the paper).
    attract_weight: w_A, weight of the attractor (1 in the paper; the
      trainer can ramp it up from 0, `train.loss_warmup_steps`).
    push_weight: w_P, weight of the push P (not in the paper; 0 = off and
      not computed).
    where: optional (B,) boolean mask of the examples that count.
    checks: under jit, add `checkify` checks for label ranges and
      non-finite inputs (run the function under `checkify.checkify`).
    neighbors: a `RepulsionNeighbors` list for these anchors (kept up to
      date with `update_neighbors`), or None: every pair.

  Returns:
    (B,) per-example loss in the compute dtype (>= float32).

  Examples:
    Two anchors 3 apart; the third example sits 2 from its anchor. With
    m = 1 the anchors are far enough apart (R = 0); with m = 2 the repeller
    R = 1/2 (4 - 3)^2 x 2 ordered pairs = 1 is added to every example:

    >>> import jax.numpy as jnp
    >>> from ra_jax.losses import class_anchor_margin_loss
    >>> anchors = jnp.array([[0.0, 0.0], [3.0, 0.0]])
    >>> embeddings = jnp.array([[0.0, 1.0], [3.0, 0.0], [1.0, 0.0]])
    >>> labels = jnp.array([0, 1, 1])
    >>> print(class_anchor_margin_loss(embeddings, labels, anchors,
    ...                                margin=1.0, min_norm=0.0))
    [0.5 0.  2. ]
    >>> print(class_anchor_margin_loss(embeddings, labels, anchors,
    ...                                margin=2.0, min_norm=0.0))
    [1.5 1.  3. ]
  """
  _check_hyperparameters(margin, min_norm, repel_weight, norm_weight,
                         attract_weight, push_weight)
  embeddings, labels, anchors, valid = _common.prepare_class_batch(
      embeddings, labels, "anchors", anchors, where, checks)
  margin, min_norm = _margins(margin, min_norm, anchors.shape[-1])
  attract = _common.half_squared_distance_to_class(embeddings, labels,
                                                      anchors)
  repel, norm, _, _ = _repel_and_norm(anchors, margin, min_norm, neighbors)
  loss = (attract_weight * attract + repel_weight * repel +
          norm_weight * norm)
  if _push_on(push_weight):
    loss = loss + push_weight * _push(embeddings, labels, anchors, margin)
  return jnp.where(valid, loss, 0.0)


def class_anchor_margin_terms(
    embeddings: jax.Array,
    labels: jax.Array,
    anchors: jax.Array,
    *,
    margin: Optional[float] = None,
    min_norm: Optional[float] = None,
    push_weight: float = 0.0,
    where: Optional[jax.Array] = None,
    checks: bool = False,
    neighbors: Optional[RepulsionNeighbors] = None,
) -> dict[str, jax.Array]:
  """The loss's terms as scalars, for logging (unweighted).

  Returns a dict with ``attract`` (mean A_i over valid examples), ``repel``
  (R), ``norm`` (N), ``min_anchor_distance`` (smallest ||c_y - c_y'||, inf
  when C = 1), ``mean_anchor_norm`` and, when ``push_weight`` is not 0,
  ``push`` (mean P_i; not computed otherwise, since the trainer logs the
  terms from inside every step and P costs a (B, C) distance matrix). Same
  arguments as `class_anchor_margin_loss`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from ra_jax.losses import class_anchor_margin_terms
    >>> anchors = jnp.array([[0.0, 0.0], [3.0, 0.0]])
    >>> embeddings = jnp.array([[0.0, 1.0], [3.0, 0.0], [1.0, 0.0]])
    >>> terms = class_anchor_margin_terms(embeddings, jnp.array([0, 1, 1]),
    ...                                   anchors, margin=2.0, min_norm=0.0)
    >>> print(terms["repel"], terms["min_anchor_distance"])
    1.0 3.0
  """
  _check_hyperparameters(margin, min_norm, 1.0, 1.0)
  embeddings, labels, anchors, valid = _common.prepare_class_batch(
      embeddings, labels, "anchors", anchors, where, checks)
  margin, min_norm = _margins(margin, min_norm, anchors.shape[-1])
  attract = _common.half_squared_distance_to_class(embeddings, labels,
                                                      anchors)
  repel, norm, min_distance, norms = _repel_and_norm(anchors, margin,
                                                     min_norm, neighbors)
  terms = {
      "attract": _common.masked_mean(attract, valid, axis=0),
      "repel": repel,
      "norm": norm,
      "min_anchor_distance": min_distance,
      "mean_anchor_norm": jnp.mean(norms),
  }
  if _push_on(push_weight):
    terms["push"] = _common.masked_mean(
        _push(embeddings, labels, anchors, margin), valid, axis=0)
  return terms


def nearest_anchor(embeddings: jax.Array, anchors: jax.Array) -> jax.Array:
  """Class of the nearest anchor (L2) for each embedding: (B, D) -> (B,) int32.

  The classifier the anchors give for free; ties go to the lower class id.

  Examples:
    >>> import jax.numpy as jnp
    >>> from ra_jax.losses import nearest_anchor
    >>> anchors = jnp.array([[0.0, 0.0], [3.0, 0.0]])
    >>> print(nearest_anchor(jnp.array([[0.0, 1.0], [2.0, 0.0]]), anchors))
    [0 1]
  """
  embeddings, anchors = jnp.asarray(embeddings), jnp.asarray(anchors)
  if embeddings.ndim != 2:
    raise ValueError(
        f"`embeddings` must have shape (B, D), got {embeddings.shape}")
  _common.check_class_matrix("anchors", anchors, embeddings.shape[1])
  return nearest(embeddings, anchors, 1)[1][:, 0]
