"""Retrieval: the ranking core and the metrics derived from it, exact and
two-stage search, the Index. Plain jax/numpy: no Flax, nothing from the
trainer."""

from ra_jax.retrieval.class_vectors import centroids
from ra_jax.retrieval.class_vectors import ClassVectors
from ra_jax.retrieval.class_vectors import SCORES
from ra_jax.retrieval.exact import exact_search
from ra_jax.retrieval.index import BaseIndex
from ra_jax.retrieval.index import Index
from ra_jax.retrieval.metrics import evaluate_ranking
from ra_jax.retrieval.metrics import evaluate_retrieval
from ra_jax.retrieval.metrics import nearest_anchor_accuracy
from ra_jax.retrieval.metrics import precision_recall
from ra_jax.retrieval.metrics import RECALL_LEVELS
from ra_jax.retrieval.metrics import retrieval_per_query
from ra_jax.retrieval.metrics import summarize
from ra_jax.retrieval.on_disk import DiskIndex
from ra_jax.retrieval.on_disk import DiskIndexWriter
from ra_jax.retrieval.on_disk import open_index
from ra_jax.retrieval.on_disk import write_index
from ra_jax.retrieval.ranking import RelevantRanks
from ra_jax.retrieval.search_evaluation import CENTROIDS
from ra_jax.retrieval.search_evaluation import evaluate_searches
from ra_jax.retrieval.search_evaluation import EXACT
from ra_jax.retrieval.search_evaluation import find_row
from ra_jax.retrieval.search_evaluation import LEARNED
from ra_jax.retrieval.search_evaluation import stage_one_cost
from ra_jax.retrieval.search_evaluation import TWO_STAGE
from ra_jax.retrieval.sharded import ShardedIndex
from ra_jax.retrieval.search_evaluation import two_stage_full_ranking
from ra_jax.retrieval.two_stage import build_lists
from ra_jax.retrieval.two_stage import check_num_lists
from ra_jax.retrieval.two_stage import search_lists
from ra_jax.retrieval.two_stage import Lists
from ra_jax.retrieval.two_stage import stage_one
from ra_jax.retrieval.two_stage import two_stage_search

__all__ = ["BaseIndex", "CENTROIDS", "ClassVectors", "DiskIndex",
           "DiskIndexWriter", "EXACT", "Index", "LEARNED", "open_index",
           "ShardedIndex",
           "write_index",
           "SCORES", "TWO_STAGE", "centroids", "Lists", "RECALL_LEVELS", "RelevantRanks",
           "build_lists", "check_num_lists", "stage_one_cost", "evaluate_ranking",
           "evaluate_retrieval", "evaluate_searches", "exact_search",
           "find_row", "search_lists", "nearest_anchor_accuracy",
           "precision_recall", "retrieval_per_query", "stage_one",
           "summarize", "two_stage_full_ranking", "two_stage_search"]
