"""Losses for retrieval embeddings, in the style of `optax.losses`.

Pure, stateless functions of (embeddings (B, D), labels (B,), [per-class
parameters], *, hyperparameters, where=None) that return one value per example
(B,): `loss.mean()` is the batch loss, or `loss.sum() / where.sum()` with a
mask. They import no Flax and nothing from the trainer. `LOSSES` (see
`registry.py`) describes each one for the trainer and the reports.
"""

from ra_jax.losses.class_anchor_margin import class_anchor_margin_loss
from ra_jax.losses.class_anchor_margin import class_anchor_margin_terms
from ra_jax.losses.class_anchor_margin import default_margin
from ra_jax.losses.class_anchor_margin import default_min_norm
from ra_jax.losses.class_anchor_margin import nearest_anchor
from ra_jax.losses.neighbor_repulsion import build_neighbors
from ra_jax.losses.neighbor_repulsion import RepulsionNeighbors
from ra_jax.losses.neighbor_repulsion import update_neighbors
from ra_jax.losses.classification import arcface_loss
from ra_jax.losses.classification import center_loss
from ra_jax.losses.classification import softmax_cross_entropy_loss
from ra_jax.losses.contrastive import contrastive_loss
from ra_jax.losses.proxy_anchor import proxy_anchor_loss
from ra_jax.losses.registry import get_loss
from ra_jax.losses.registry import LOSSES
from ra_jax.losses.registry import LossSpec
from ra_jax.losses.registry import Repeller
from ra_jax.losses.registry import StageOne
from ra_jax.losses.triplet import MININGS
from ra_jax.losses.triplet import triplet_loss

__all__ = [
    "LOSSES",
    "LossSpec",
    "MININGS",
    "Repeller",
    "RepulsionNeighbors",
    "StageOne",
    "arcface_loss",
    "build_neighbors",
    "center_loss",
    "class_anchor_margin_loss",
    "class_anchor_margin_terms",
    "contrastive_loss",
    "default_margin",
    "default_min_norm",
    "get_loss",
    "nearest_anchor",
    "proxy_anchor_loss",
    "softmax_cross_entropy_loss",
    "triplet_loss",
    "update_neighbors",
]
