"""One vector per class, and how a query scores against them: stage 1 of
two-stage search for any loss.

- a loss's own class vectors: the class anchor margin loss's anchors and
  center loss's centres by L2 distance ("l2"), ArcFace's weights and
  proxy-anchor's proxies by cosine ("cosine"), a softmax classifier's rows
  by logit ("logit": v_c . e + b_c);
- the class centroids of a database's embeddings (`centroids`), which need
  labels only: the control every two-stage claim must beat.

`ClassVectors.top(queries, k)` ranks the classes for each query, best
first, ties to the lower class id.
"""

import dataclasses
from typing import Literal, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ra_jax.distances import nearest

Score = Literal["l2", "cosine", "logit"]
SCORES = ("l2", "cosine", "logit")


def _unit(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@jax.jit
def _logits(queries, vectors, bias):
  return jnp.matmul(queries, vectors.T,
                    precision=jax.lax.Precision.HIGHEST) + bias


@dataclasses.dataclass(frozen=True)
class ClassVectors:
  """Class vectors (C, D) and their score.

  score: "l2" (the nearest vector ranks first), "cosine" (the highest
  cosine: the nearest unit vector to the unit query) or "logit" (the
  highest v_c . e + bias_c). bias: (C,), "logit" only (default 0).
  """
  vectors: np.ndarray
  score: Score = "l2"
  bias: Optional[np.ndarray] = None

  def __post_init__(self):
    vectors = np.asarray(self.vectors, np.float32)
    if vectors.ndim != 2 or not len(vectors):
      raise ValueError(f"class vectors must be (C, D) with C >= 1, got"
                       f" {vectors.shape}")
    if not np.all(np.isfinite(vectors)):
      raise ValueError("class vectors hold NaN or inf")
    if self.score not in SCORES:
      raise ValueError(f"score must be one of {', '.join(SCORES)}, got"
                       f" {self.score!r}")
    if self.bias is not None and self.score != "logit":
      raise ValueError(f"a bias is a logit's; score is {self.score!r}")
    bias = None
    if self.score == "logit":
      bias = (np.zeros(len(vectors), np.float32) if self.bias is None else
              np.asarray(self.bias, np.float32))
      if bias.shape != (len(vectors),):
        raise ValueError(f"bias must be ({len(vectors)},), one per class,"
                         f" got {bias.shape}")
    object.__setattr__(self, "vectors", vectors)
    object.__setattr__(self, "bias", bias)

  def __len__(self) -> int:
    return len(self.vectors)

  def top(self, queries, k: int) -> np.ndarray:
    """The k best classes of each query (Q, D) -> (Q, k) int32, best
    first; of equally good classes the lower id first."""
    if not 1 <= k <= len(self):
      raise ValueError(f"k must be in [1, {len(self)}] (the classes), got"
                       f" {k}")
    queries = jnp.asarray(queries, jnp.float32)
    if self.score == "l2":
      return np.asarray(nearest(queries, self.vectors, k)[1])
    if self.score == "cosine":
      return np.asarray(nearest(_unit(queries), _unit(self.vectors), k)[1])
    return np.asarray(jax.lax.top_k(_logits(queries, self.vectors,
                                            self.bias), k)[1])


def centroids(embeddings, labels, num_classes: int, *,
              sphere: bool = False) -> ClassVectors:
  """The mean embedding of each class c in [0, num_classes) (C, D), scored
  by L2; with `sphere` (embeddings on the unit sphere) each mean is put on
  the sphere too, so the nearest centroid is the one of highest cosine. A
  class without embeddings is an error naming it."""
  embeddings = np.asarray(embeddings, np.float64)
  labels = np.asarray(labels)
  counts = np.bincount(labels, minlength=num_classes)
  if len(counts) > num_classes:
    raise ValueError(f"labels go up to {labels.max()}; there are"
                     f" {num_classes} classes")
  missing = np.flatnonzero(counts == 0)
  if len(missing):
    raise ValueError(f"class(es) {missing[:10].tolist()} have no embeddings:"
                     " no centroid")
  sums = np.zeros((num_classes, embeddings.shape[1]))
  np.add.at(sums, labels, embeddings)
  means = sums / counts[:, None]
  if sphere:
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
  return ClassVectors(means.astype(np.float32), "l2")
