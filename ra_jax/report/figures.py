"""The report's PNG figures (matplotlib, Agg backend: no display needed)."""

from typing import Sequence

import numpy as np

from ra_jax import files, retrieval
from ra_jax.report import runs as runs_lib


def _pyplot():
  try:
    import matplotlib
  except ImportError as error:
    raise ImportError("the report's figures need matplotlib: pip install"
                      " matplotlib (or '.[report]')") from error
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def training_curves(path: str, runs: Sequence[runs_lib.RunRecord],
                    metrics: Sequence[dict]) -> None:
  """Per run: training loss (left, log scale) and periodic mAP@100 (right)."""
  plt = _pyplot()
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  for run, rows in zip(runs, metrics):
    steps = [r["step"] for r in rows if "train/loss" in r]
    loss = [r["train/loss"] for r in rows if "train/loss" in r]
    left.plot(steps, np.maximum(loss, 1e-6), label=run.label)
    evals = [(r["step"], r["eval/map@100"]) for r in rows
             if "eval/map@100" in r]
    if evals:
      right.plot(*zip(*evals), marker="o", label=run.label)
  left.set(xlabel="step", ylabel="training loss", yscale="log",
           title="training loss (each loss on its own scale)")
  right.set(xlabel="step", ylabel="mAP@100 (evaluation subset)",
            title="retrieval during training")
  for axis in (left, right):
    axis.grid(alpha=0.3)
  if right.lines:
    right.legend(fontsize=8)
  else:  # runs without evaluation during training (tuning trials)
    right.text(0.5, 0.5, "no evaluation during training",
               ha="center", va="center", transform=right.transAxes)
    left.legend(fontsize=7)
  _save(fig, path)


def validation_curves(path: str,
                      curves: dict[str, Sequence[tuple[int, float]]]) -> None:
  """Full validation mAP against training step, one line per run."""
  plt = _pyplot()
  fig, axis = plt.subplots(figsize=(6.5, 4.5))
  for label, curve in curves.items():
    if curve:
      axis.plot(*zip(*curve), marker=".", label=label)
  axis.set(xlabel="step", ylabel="validation mAP (full ranking)",
           title="training length")
  axis.grid(alpha=0.3)
  axis.legend(fontsize=8)
  _save(fig, path)


def precision_recall(path: str, curves: dict[str, Sequence[float]]) -> None:
  plt = _pyplot()
  fig, axis = plt.subplots(figsize=(5.5, 4.5))
  levels = retrieval.RECALL_LEVELS
  for label, curve in curves.items():
    axis.plot(levels, curve, marker=".", label=label)
  axis.set(xlabel="recall", ylabel="interpolated precision", ylim=(0, 1.02),
           title="precision-recall (test queries vs train database)")
  axis.grid(alpha=0.3)
  axis.legend(fontsize=8)
  _save(fig, path)


def projections(path: str, panels: dict[str, dict]) -> None:
  """One panel per run: 2-D PCA of test embeddings coloured by class, with
  the anchors (if any) as black stars."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5),
                           squeeze=False)
  for axis, (label, panel) in zip(axes[0], panels.items()):
    axis.scatter(panel["points"][:, 0], panel["points"][:, 1],
                 c=panel["labels"], cmap="tab10", s=4, alpha=0.6)
    if len(panel["anchors"]):
      axis.scatter(panel["anchors"][:, 0], panel["anchors"][:, 1], c="black",
                   marker="*", s=160, label="anchors")
      axis.legend(loc="upper right", fontsize=8)
    # the label on a line of its own: long names overflow the panel
    axis.set_title(f"{label}\ntest embeddings, 2-D PCA", fontsize=10)
  _save(fig, path)


def _save(fig, path: str) -> None:
  fig.tight_layout()
  with files.atomic_write(path, "wb") as f:
    fig.savefig(f, format="png", dpi=110)
  import matplotlib.pyplot as plt
  plt.close(fig)
