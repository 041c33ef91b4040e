"""Where a trained run's embedding is taken, and in which geometry, changes
its retrieval numbers: this evaluates one run's newest checkpoint on its own
protocol (queries against database, full ranking) with

- the head's output as trained (the run's declared geometry),
- the head's output projected onto the unit sphere (cosine),
- the backbone's pooled features before the head, raw and on the sphere,
- for classifier losses (per-class `kernel`, `bias`), the logits,

so a loss that ranks badly can be told apart from an embedding taken in the
wrong place. A diagnosis, not a ranking: the report's tables use each
loss's declared geometry.

  python -m study.embedding_choices --workdir runs/grid/tuning/ce/trial3 \
      --out results/grid/diagnosis/ce_trial3.json
"""

import argparse
import json
import sys

import jax
import numpy as np

# Imported here, not when a diagnosis runs: the study grid imports this
# module when it starts, and a module imported hours later from a working
# tree edited since would mix two versions of ra_jax in one process.
from ra_jax import models, retrieval
from ra_jax.trained import TrainedRun
from ra_jax.training import evaluation


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embedding_choices(workdir: str) -> dict:
  run = TrainedRun(workdir)
  model = run.exp.model

  def features(variables, images):
    return model.apply(variables, images,
                       method=lambda m, x: m.backbone(x, train=False))

  backbone = jax.jit(features)
  outputs = {}
  for role in ("query", "database"):
    split = run.split(role)
    head, labels = run.embed_split(split)
    pooled, _ = evaluation.embed(backbone, run.variables, split,
                                 run.exp.augment,
                                 run.exp.config.eval.batch_size)
    outputs[role] = (head, pooled, labels)
  (q_head, q_pool, q_labels), (d_head, d_pool, d_labels) = (
      outputs["query"], outputs["database"])
  # The embedding as trained comes first: the report compares every other
  # choice with the first (study/report/diagnostics._choices_reading).
  choices = {
      f"head ({run.exp.geometry}, as trained)": (q_head, d_head),
      "head, on the unit sphere": (_unit(q_head), _unit(d_head)),
      "backbone features": (q_pool, d_pool),
      "backbone features, on the unit sphere": (_unit(q_pool),
                                                _unit(d_pool)),
  }
  params = models.class_parameters(run.state.params)
  if {"kernel", "bias"} <= set(params):
    kernel = np.asarray(params["kernel"], np.float64)
    bias = np.asarray(params["bias"], np.float64)
    choices["logits"] = (q_head @ kernel.T + bias, d_head @ kernel.T + bias)
  results = {}
  for name, (query, db) in choices.items():
    metrics = retrieval.evaluate_retrieval(query, q_labels, db, d_labels,
                                           ks=(10, 100))
    results[name] = {k: metrics[k] for k in ("map", "precision@10",
                                             "map@100")}
    print(f"{name}: mAP {results[name]['map']:.4f}, P@10"
          f" {results[name]['precision@10']:.4f}", flush=True)
  return {"workdir": workdir, "step": run.step, "loss": run.exp.loss.name,
          "geometry": run.exp.geometry,
          "query_split": run.source.query_split,
          "database_split": run.source.database_split,
          "embedding_dim": int(q_head.shape[1]),
          "feature_dim": int(q_pool.shape[1]), "choices": results}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  summary = embedding_choices(args.workdir)
  if args.out:
    from ra_jax import files
    files.write_json(args.out, summary)
  else:
    print(json.dumps(summary, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
