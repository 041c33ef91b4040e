"""Class vectors imprinted from embeddings (Qi, Brown & Lowe, "Low-shot
learning with imprinted weights", CVPR 2018), for many classes with few
images each.

With C >> B a class's anchor gets a gradient only in the batches that hold
one of its images (a few times per epoch at 100,000 classes of 4 images),
so randomly placed anchors barely move and the network cannot map every
class onto an arbitrary point: training does not start. Imprinting starts
each anchor where the untrained network already puts its class, spread to
the scale a random start would have, so the network only has to stretch
its output and the anchors are separated from the first step.
"""

import jax
import jax.numpy as jnp
import numpy as np


def imprinted_class_vectors(embeddings, labels, num_classes: int,
                            scale: float) -> np.ndarray:
  """(C, D) float32: each class's mean embedding, minus the mean of all
  embeddings, times one factor that makes the rows' root-mean-square norm
  scale * sqrt(D) (the norm of the "normal" start N(0, scale^2)):

    c_y = k (mean_{i: y_i = y} e_i - mean_i e_i),
    k = scale sqrt(D) / sqrt(mean_y ||mean_{i: y_i = y} e_i - mean_i e_i||^2)

  Args:
    embeddings: (N, D) embeddings of the training images.
    labels: (N,) int class of each, in [0, C).
    num_classes: C; every class needs at least one embedding.
    scale: the per-coordinate scale above, > 0.
  """
  embeddings = np.asarray(embeddings, np.float32)
  labels = np.asarray(labels)
  if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
    raise ValueError(f"embeddings must be (N, D) and labels (N,), got"
                     f" {embeddings.shape} and {labels.shape}")
  if not scale > 0:
    raise ValueError(f"scale must be > 0, got {scale}")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"labels must be in [0, {num_classes}), got"
                     f" [{labels.min()}, {labels.max()}]")
  counts = np.bincount(labels, minlength=num_classes)
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    raise ValueError(f"cannot imprint {empty.size} of {num_classes} classes"
                     f" with no embedding (classes {empty[:5].tolist()}"
                     f"{', ...' if empty.size > 5 else ''})")
  sums = jax.ops.segment_sum(jnp.asarray(embeddings), jnp.asarray(labels),
                             num_segments=num_classes)
  means = np.asarray(sums, np.float64) / counts[:, None]
  means -= embeddings.mean(axis=0, dtype=np.float64)
  rms = np.sqrt(np.mean(np.sum(np.square(means), axis=1)))
  if not np.isfinite(rms) or rms == 0.0:
    raise ValueError(f"cannot imprint: the class means are all equal or"
                     f" not finite (root-mean-square spread {rms})")
  return (means * (scale * np.sqrt(embeddings.shape[1]) / rms)).astype(
      np.float32)
