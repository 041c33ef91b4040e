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
from typing import Any, Callable, Iterator, Optional

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
  embeddings, labels = zip(*embed_batches(apply, variables, split, augment,
                                          batch_size, progress=progress))
  return np.concatenate(embeddings), np.concatenate(labels)


def embed_batches(apply: Callable, variables: Any, split,
                  augment: data.AugmentConfig, batch_size: int, *,
                  progress: Optional[str] = None
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """`embed` one batch at a time, in the split's order: (embeddings (b, D),
  labels (b,)), for databases too large to hold (`retrieval.on_disk`)."""
  batches = data.batches(data.eval_dataset(
      split, augment, batch_size=batch_size, process_index=0,
      process_count=1))
  for batch in tqdm.tqdm(batches, desc=progress, unit="batch",
                         disable=progress is None):
    out = np.asarray(apply(variables, batch["image"]), np.float32)
    yield out[batch["mask"]], batch["label"][batch["mask"]]


def variables_of(state) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


def class_vectors_of(state, loss: losses.LossSpec
                     ) -> Optional[retrieval.ClassVectors]:
  """The loss's own class vectors with their score (`LossSpec.stage_one`),
  or None."""
  spec = loss.stage_one
  if spec is None:
    return None
  params = models.class_parameters(state.params)
  return retrieval.ClassVectors(
      np.asarray(params[spec.param], np.float32), spec.score,
      None if spec.bias is None else np.asarray(params[spec.bias],
                                                np.float32))


def anchors_of(state, loss: losses.LossSpec) -> Optional[np.ndarray]:
  """The class anchors of the run's loss (`LossSpec.anchors`), or None."""
  if loss.anchors is None:
    return None
  return np.asarray(models.class_parameters(state.params)[loss.anchors],
                    np.float32)


def evaluate(model, state, source: data.DatasetSource, augment,
             eval_config, loss: losses.LossSpec,
             apply: Optional[Callable] = None,
             geometry: str = "l2", progress: bool = False) -> dict[str, Any]:
  """Exact retrieval metrics (full ranking), with anchors the nearest-anchor
  accuracy, and two-stage search with 1, 2, ... lists
  (`eval_config.two_stage_lists`) from each of `eval_config.list_sources`,
  stage 1 by each of `eval_config.class_vectors`: "learned" (the loss's own
  class vectors, if it has any) and/or "centroids" (the database's class
  centroids, in the run's geometry); every search as one row of "searches"
  (`retrieval.evaluate_searches`). `apply`: a jitted `model.apply` to reuse
  (e.g. `SubsetEvaluator.apply`). `geometry`: the run's ("sphere": the
  centroids are put on the sphere too). `progress`: show bars (embedding,
  then the searches done)."""
  apply = apply or jax.jit(model.apply)  # one compilation for both splits
  variables = variables_of(state)
  query, query_labels = embed(
      apply, variables, source.splits[source.query_split], augment,
      eval_config.batch_size,
      progress="embedding the queries" if progress else None)
  db, db_labels = embed(
      apply, variables, source.splits[source.database_split], augment,
      eval_config.batch_size,
      progress="embedding the database" if progress else None)
  ks = tuple(k for k in eval_config.ks if k <= len(db))
  anchors = anchors_of(state, loss)
  vector_sets = {}
  for name in eval_config.get("class_vectors", (retrieval.LEARNED,)):
    if name == retrieval.LEARNED:
      learned = class_vectors_of(state, loss)
      if learned is not None:
        vector_sets[name] = learned
    else:  # retrieval.CENTROIDS (experiment.validate_config checks)
      vector_sets[name] = retrieval.centroids(
          db, db_labels, source.num_classes,
          sphere=geometry == "sphere")
  sources = tuple(eval_config.get("list_sources", ("labels",)))
  num_lists = tuple(eval_config.two_stage_lists)
  searches = 1 + len(vector_sets) * len(sources) * len(num_lists)
  with tqdm.tqdm(total=len(query), unit="query", disable=not progress,
                 desc=f"searches ranked ({len(query)} queries x {len(db)})",
                 postfix=f"{searches} searches") as bar:
    rows, per_query = retrieval.evaluate_searches(
        query, query_labels, db, db_labels, vector_sets or None, ks=ks,
        num_lists=num_lists, list_sources=sources,
        exclude_self=source.query_split == source.database_split,
        progress=bar.update)
  results = {"exact": rows[0]["metrics"]}
  if eval_config.get("per_query", False):  # for paired significance tests
    results["per_query_ap"] = [None if math.isnan(v) else round(float(v), 5)
                               for v in per_query["map"]]
  if anchors is not None:
    results["nearest_anchor_accuracy"] = retrieval.nearest_anchor_accuracy(
        query, query_labels, anchors)
  results["searches"] = rows
  return results


def upgraded_results(results: dict) -> dict:
  """results.json as this version writes it, from any version's: before
  "searches", exact search's time was "exact_search_seconds" and each
  two-stage search a key "two_stage_<n>" (label lists) or
  "two_stage_anchors_<n>" (anchor lists) holding its seconds, distances and
  metrics together."""
  if "searches" in results or "exact" not in results:
    return results
  results = dict(results)
  dataset = results.get("dataset") or {}
  size = dataset.get("split_sizes", {}).get(dataset.get("database_split"))
  rows = [{"search": retrieval.EXACT, "class_vectors": None,
           "list_source": None, "lists": None,
           "seconds": results.pop("exact_search_seconds", None),
           "distance_computations": None if size is None else float(size),
           "distance_fraction": 1.0, "stage_one_accuracy": None,
           "metrics": results["exact"]}]
  for key in [k for k in results if k.startswith("two_stage_")]:
    values = dict(results.pop(key))
    source, _, lists = key.removeprefix("two_stage_").rpartition("_")
    rows.append({"search": retrieval.TWO_STAGE,
                 "class_vectors": retrieval.LEARNED,
                 "list_source": "anchors" if source == "anchors" else
                 "labels", "lists": int(lists),
                 "seconds": values.pop("seconds", None),
                 "distance_computations": values.pop(
                     "distance_computations", None),
                 "distance_fraction": values.pop("distance_fraction", None),
                 "stage_one_accuracy": None, "metrics": values})
  results["searches"] = rows
  return results


def final_results(exp, state, step: int,
                  apply: Optional[Callable] = None,
                  progress: bool = False) -> dict[str, Any]:
  """What results.json (and evaluation/step_N.json) hold: the dataset (its
  query and database splits), the geometry, the step and `evaluate`'s
  metrics."""
  return {"dataset": exp.source.describe(), "geometry": exp.geometry,
          "steps": step,
          **evaluate(exp.model, state, exp.source, exp.augment,
                     exp.config.eval, exp.loss, apply=apply,
                     geometry=exp.geometry, progress=progress)}


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
  return data.SubsetSplit(split, data.evenly_spaced(len(split), count))


def format_table(results: dict) -> str:
  """The results table the CLIs print: one row per search (mAP over the
  full ranking, the two-stage one with the lists not kept appended; the
  share of exact search's distances; the top-k search time when measured),
  then nearest-anchor accuracy and training speed when present."""
  results = upgraded_results(results)
  rows = results["searches"]
  exact = rows[0]["metrics"]
  ks = sorted(int(k.split("@")[1]) for k in exact if k.startswith("precision@"))
  timed = all(row.get("seconds") is not None for row in rows)
  header = ["search", "mAP"] + [f"mAP@{k}" for k in ks] + [
      f"P@{k}" for k in ks] + ["distances", "stage-1 acc."] + (
          ["top-k search s"] if timed else [])
  lines = [header]
  for row in rows:
    m = row["metrics"]
    vectors = row.get("class_vectors")
    name = ("exact" if row["search"] == retrieval.EXACT else
            f"two-stage, {row['lists']}"
            f" {row['list_source'].removesuffix('s')} list(s)" + (
                "" if vectors in (None, retrieval.LEARNED) else
                f", by {vectors}"))
    fraction = row.get("distance_fraction")
    accuracy = row.get("stage_one_accuracy")
    lines.append([name, f"{m['map']:.4f}" if "map" in m else "-"] +
                 [f"{m[f'map@{k}']:.4f}" for k in ks] +
                 [f"{m[f'precision@{k}']:.4f}" for k in ks] +
                 ["-" if fraction is None else f"{fraction:.3f}"] +
                 ["-" if accuracy is None else f"{accuracy:.4f}"] +
                 ([f"{row['seconds']:.3f}"] if timed else []))
  widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
  out = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
         for row in lines]
  if "nearest_anchor_accuracy" in results:
    out.append("nearest-anchor accuracy:"
               f" {results['nearest_anchor_accuracy']:.4f}")
  if "train_images_per_second" in results:
    out.append(f"training: {results['train_images_per_second']:.0f} images/s")
  return "\n".join(out)
