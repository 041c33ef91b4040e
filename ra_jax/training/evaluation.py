"""Retrieval evaluation of a trained state on the dataset's protocol
(queries = `source.query_split`, database = `source.database_split`).

`evaluate` is the full evaluation at the end of a run (and of
`python -m ra_jax.evaluate`): exact search and two-stage search with 1, 2, ...
lists, every metric of `ra_jax.retrieval.evaluate_retrieval`.
`SubsetEvaluator` is the cheap one during training: mAP@100 of a fixed
query subset against a fixed database subset, and nearest-anchor accuracy. Every process computes
the same numbers on its own copy of the data (evaluation is not sharded).
"""

import math
from typing import Any, Callable, Optional

import jax
import numpy as np
import tqdm

from ra_jax import data, losses, models, retrieval


def embed(apply: Callable, variables: Any, split, augment: data.AugmentConfig,
          batch_size: int, *, progress: Optional[str] = None
          ) -> tuple[np.ndarray, np.ndarray]:
  """Embeddings (N, D) float32 and labels (N,) of every example of `split`,
  with `apply(variables, images)` (jitted once by the caller). `progress`:
  show a progress bar with this description."""
  embeddings, labels = [], []
  batches = data.batches(data.eval_dataset(
      split, augment, batch_size=batch_size, process_index=0,
      process_count=1))
  for batch in tqdm.tqdm(batches, desc=progress, unit="batch",
                         disable=progress is None):
    out = np.asarray(apply(variables, batch["image"]), np.float32)
    embeddings.append(out[batch["mask"]])
    labels.append(batch["label"][batch["mask"]])
  return np.concatenate(embeddings), np.concatenate(labels)


def variables_of(state) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


def anchors_of(state, loss: losses.LossSpec) -> Optional[np.ndarray]:
  """The class anchors of the run's loss (`LossSpec.anchors`), or None."""
  if loss.anchors is None:
    return None
  return np.asarray(models.class_parameters(state.params)[loss.anchors],
                    np.float32)


def evaluate(model, state, source: data.DatasetSource, augment,
             eval_config, loss: losses.LossSpec,
             apply: Optional[Callable] = None) -> dict[str, Any]:
  """Exact retrieval metrics (full ranking), and with anchors the
  nearest-anchor accuracy and two-stage search with 1, 2, ... label lists
  (`eval_config.two_stage_lists`). `apply`: a jitted `model.apply` to reuse
  (e.g. `SubsetEvaluator.apply`)."""
  apply = apply or jax.jit(model.apply)  # one compilation for both splits
  variables = variables_of(state)
  query, query_labels = embed(apply, variables,
                              source.splits[source.query_split], augment,
                              eval_config.batch_size)
  db, db_labels = embed(apply, variables,
                        source.splits[source.database_split], augment,
                        eval_config.batch_size)
  ks = tuple(k for k in eval_config.ks if k <= len(db))
  exclude_self = source.query_split == source.database_split
  per_query = retrieval.retrieval_per_query(
      query, query_labels, db, db_labels, ks=ks, exclude_self=exclude_self)
  results = {"exact": retrieval.summarize(per_query, query_labels)}
  if eval_config.get("per_query", False):  # for paired significance tests
    results["per_query_ap"] = [None if math.isnan(v) else round(float(v), 5)
                               for v in per_query["map"]]
  anchors = anchors_of(state, loss)
  if anchors is None:
    return results
  results["nearest_anchor_accuracy"] = retrieval.nearest_anchor_accuracy(
      query, query_labels, anchors)
  sources = tuple(eval_config.get("list_sources", ("labels",)))
  rows = retrieval.compare_searches(
      query, query_labels, db, db_labels, anchors, k=max(ks), ks=ks,
      num_lists=tuple(eval_config.two_stage_lists), list_sources=sources)
  results["exact_search_seconds"] = rows[0]["seconds"]
  for row in rows[1:]:  # top-k timings and metrics, then the full ranking's
    key = ("two_stage_" + ("" if row["list_source"] == "labels" else
                           f"{row['list_source']}_") + str(row["lists"]))
    results[key] = {
        **{k: v for k, v in row.items()
           if k not in ("search", "lists", "list_source")},
        **retrieval.two_stage_full_ranking(
            query, query_labels, db, db_labels, anchors,
            num_lists=row["lists"], ks=ks, list_source=row["list_source"])}
  return results


def final_results(exp, state, step: int,
                  apply: Optional[Callable] = None) -> dict[str, Any]:
  """What results.json (and evaluation/step_N.json) hold: the dataset (its
  query and database splits), the geometry, the step and `evaluate`'s
  metrics."""
  return {"dataset": exp.source.describe(), "geometry": exp.geometry,
          "steps": step,
          **evaluate(exp.model, state, exp.source, exp.augment,
                     exp.config.eval, exp.loss, apply=apply)}


class SubsetEvaluator:
  """mAP@100, full mAP (and nearest-anchor accuracy) of `num_queries`
  evenly spaced queries against `num_database` evenly spaced database
  items: the cheap evaluation run every `eval.every` steps during
  training."""

  def __init__(self, model, source: data.DatasetSource, augment,
               eval_config, loss: losses.LossSpec):
    self.apply = jax.jit(model.apply)
    self.loss = loss
    self.augment, self.batch_size = augment, eval_config.batch_size
    self.query = _spread(source.splits[source.query_split],
                         eval_config.subset_queries)
    self.db = _spread(source.splits[source.database_split],
                      eval_config.subset_database)
    self.exclude_self = source.query_split == source.database_split
    if self.exclude_self:  # the same subset, so the query's own index is
      self.db = self.query  # the one to exclude

  def __call__(self, state) -> dict[str, float]:
    variables = variables_of(state)
    query, query_labels = embed(self.apply, variables, self.query,
                                self.augment, self.batch_size)
    db, db_labels = embed(self.apply, variables, self.db, self.augment,
                          self.batch_size)
    k = min(100, len(db) - self.exclude_self)
    metrics = retrieval.evaluate_retrieval(
        query, query_labels, db, db_labels, ks=(k,),
        exclude_self=self.exclude_self)
    out = {f"eval/map@{k}": metrics[f"map@{k}"], "eval/map": metrics["map"]}
    anchors = anchors_of(state, self.loss)
    if anchors is not None:
      out["eval/nearest_anchor_accuracy"] = retrieval.nearest_anchor_accuracy(
          query, query_labels, anchors)
    return out


def _spread(split, count: int):
  if not count or count >= len(split):
    return split
  return data.SubsetSplit(split, np.linspace(0, len(split) - 1, count,
                                             dtype=np.int64))


def format_table(results: dict) -> str:
  """The results table the CLIs print: exact and two-stage rows (mAP over
  the full ranking, the two-stage one with the lists not kept appended;
  the top-k search time when measured), then nearest-anchor accuracy and
  training speed when present."""
  exact = results["exact"]
  ks = sorted(int(k.split("@")[1]) for k in exact if k.startswith("precision@"))
  timed = "exact_search_seconds" in results
  header = ["search", "mAP"] + [f"mAP@{k}" for k in ks] + [
      f"P@{k}" for k in ks] + (["top-k search s"] if timed else [])
  rows = [["exact", f"{exact['map']:.4f}"] +
          [f"{exact[f'map@{k}']:.4f}" for k in ks] +
          [f"{exact[f'precision@{k}']:.4f}" for k in ks] +
          ([f"{results['exact_search_seconds']:.3f}"] if timed else [])]
  for name, value in results.items():
    if name.startswith("two_stage_"):
      source = "anchor" if name.startswith("two_stage_anchors_") else "label"
      full = f"{value['map']:.4f}" if "map" in value else "-"
      rows.append([f"two-stage, {name.split('_')[-1]} {source} list(s)",
                   full] +
                  [f"{value[f'map@{k}']:.4f}" for k in ks] +
                  [f"{value[f'precision@{k}']:.4f}" for k in ks] +
                  ([f"{value['seconds']:.3f}"] if timed else []))
  widths = [max(len(r[i]) for r in [header] + rows) for i in
            range(len(header))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
           for row in [header] + rows]
  if "nearest_anchor_accuracy" in results:
    lines.append("nearest-anchor accuracy:"
                 f" {results['nearest_anchor_accuracy']:.4f}")
  if "train_images_per_second" in results:
    lines.append(f"training: {results['train_images_per_second']:.0f} images/s")
  return "\n".join(lines)
