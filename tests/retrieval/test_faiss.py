"""faiss with the learned anchors as coarse centroids returns exactly
ra_jax's two-stage results; a flat faiss index, exact search."""

import numpy as np
import pytest

from ra_jax import retrieval
from ra_jax.retrieval import faiss_interop

faiss = pytest.importorskip("faiss")


def assert_same_results(ours, theirs, rtol=1e-5):
  """Equal distances (to float rounding) and the same ids in the same
  order, except where items lie at distances equal up to rounding: those
  may come in either order, or, at the k-th place, be another such item."""
  (d_ours, i_ours), (d_theirs, i_theirs) = ours, theirs
  np.testing.assert_allclose(d_theirs, d_ours, rtol=rtol, atol=1e-5)
  for row, place in zip(*np.nonzero(i_ours != i_theirs)):
    near = np.isclose(d_ours[row], d_ours[row, place], rtol=rtol, atol=1e-5)
    assert i_theirs[row, place] in i_ours[row][near] or near[-1], (
        row, place, i_ours[row], i_theirs[row])


def _clustered(seed, n=600, classes=7, dim=16):
  rng = np.random.default_rng(seed)
  anchors = 4 * rng.normal(size=(classes, dim)).astype(np.float32)
  labels = rng.integers(0, classes, n)
  embeddings = anchors[labels] + rng.normal(size=(n, dim)).astype(np.float32)
  return embeddings.astype(np.float32), labels, anchors


@pytest.mark.parametrize("list_source", ["labels", "anchors"])
def test_ivf_over_the_anchors_is_two_stage_search(list_source):
  embeddings, labels, anchors = _clustered(0)
  index = retrieval.Index.build(embeddings[:500], labels[:500],
                                anchors=anchors, ids=np.arange(500) * 3 + 7,
                                list_source=list_source)
  ivf = index.to_faiss()
  assert isinstance(ivf, faiss.IndexIVFFlat) and ivf.nlist == 7
  queries = embeddings[500:]
  for num_lists in (1, 2, 7):
    for k in (1, 10):
      assert_same_results(
          index.search(queries, k, two_stage=True, num_lists=num_lists),
          faiss_interop.search(ivf, queries, k, num_lists=num_lists))
  flat = index.to_faiss(exact=True)
  assert_same_results(index.search(queries, 10),
                       faiss_interop.search(flat, queries, 10))


def test_too_few_candidates_are_missing_in_both():
  embeddings, labels, anchors = _clustered(1, n=40, classes=5)
  index = retrieval.Index.build(embeddings, labels, anchors=anchors)
  k = 30  # more than one class's list holds
  distances, ids = faiss_interop.search(index.to_faiss(), embeddings[:3], k)
  ours = index.search(embeddings[:3], k, two_stage=True)
  np.testing.assert_array_equal(ids < 0, ours[1] < 0)
  assert np.all(np.isinf(distances[ids < 0]))
  assert_same_results(ours, (distances, ids))


def test_an_index_without_anchors_has_only_the_flat_form():
  embeddings, labels, _ = _clustered(2, n=20)
  index = retrieval.Index.build(embeddings, labels)
  with pytest.raises(ValueError, match="needs anchors.*exact=True"):
    index.to_faiss()
  assert index.to_faiss(exact=True).ntotal == 20


@pytest.mark.slow
def test_faiss_returns_two_stage_results_on_trained_embeddings(digits_run):
  from ra_jax.trained import TrainedRun
  run = TrainedRun(digits_run)
  index = run.database_index(progress=False)
  queries, _ = run.embed_split(run.split("query"))
  ivf = index.to_faiss()
  for num_lists in (1, 2, 3):
    assert_same_results(
        index.search(queries, 10, two_stage=True, num_lists=num_lists),
        faiss_interop.search(ivf, queries, 10, num_lists=num_lists),
        rtol=1e-4)
  assert_same_results(index.search(queries, 10),
                       faiss_interop.search(index.to_faiss(exact=True),
                                            queries, 10), rtol=1e-4)
