"""Retrieval: metrics, exact and two-stage search. Plain jax/numpy: no Flax,
nothing from the trainer."""

from ra_jax.retrieval.index import Index
from ra_jax.retrieval.metrics import evaluate_ranking
from ra_jax.retrieval.metrics import evaluate_retrieval
from ra_jax.retrieval.search import build_lists
from ra_jax.retrieval.search import exact_search
from ra_jax.retrieval.search import list_table
from ra_jax.retrieval.search import Lists
from ra_jax.retrieval.search import nearest_lists
from ra_jax.retrieval.search import two_stage_search

__all__ = ["Index", "Lists", "build_lists", "evaluate_ranking",
           "evaluate_retrieval", "exact_search", "list_table", "nearest_lists",
           "two_stage_search"]
