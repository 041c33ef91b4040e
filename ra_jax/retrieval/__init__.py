"""Retrieval: metrics (and, to come, exact / two-stage search and an Index).
Plain jax/numpy: no Flax, nothing from the trainer."""

from ra_jax.retrieval.metrics import evaluate_retrieval

__all__ = ["evaluate_retrieval"]
