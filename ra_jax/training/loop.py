"""`train_and_evaluate(config, workdir)`: the main job.

config -> data source -> grain pipeline (per-host shard) -> global sharded
batch -> jitted train step -> periodic checkpoints (state + data iterator) ->
final evaluation: embed the query and database splits, exact and two-stage
retrieval metrics -> `workdir/results.json`. Restarting with the same
workdir resumes from the newest complete checkpoint.
"""

import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ra_jax import data, models, retrieval
from ra_jax.training import checkpoint, objective, optimizer
from ra_jax.training import step as step_lib


class NonFiniteLossError(RuntimeError):
  pass


def _source(config):
  kwargs = {}
  if config.dataset.name not in ("digits",):
    if config.dataset.data_dir:
      kwargs["data_dir"] = config.dataset.data_dir
    if config.dataset.manual_dir:
      kwargs["manual_dir"] = config.dataset.manual_dir
    builder = config.dataset.get("builder", "auto")
    if builder not in ("auto", "catalogue", "own"):
      raise ValueError(f"dataset.builder must be auto, catalogue or own, got"
                       f" {builder!r}")
    if builder != "auto":
      kwargs["own_builder"] = builder == "own"
  source = data.get_source(config.dataset.name, **kwargs)
  return source.with_protocol(
      query_split=config.dataset.query_split or None,
      database_split=config.dataset.database_split or None)


def _check_workdir(workdir: str, config) -> None:
  """A workdir belongs to one configuration: refuse another one's."""
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    keys = ("dataset", "model", "loss")
    differ = [k for k in keys if saved.get(k) != current.get(k)]
    if differ:
      raise ValueError(f"{workdir} holds a run with another {', '.join(differ)}"
                       f" configuration ({path}); use a new --workdir")
    return
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(current, f, indent=1)
    os.replace(tmp, path)


def _model(config, source):
  kwargs = {}
  if config.model.width and config.model.name.startswith("resnet"):
    kwargs["width"] = config.model.width
  if config.model.name.startswith("vit"):
    kwargs["image_size"] = config.dataset.image_size
  return models.get_model(
      config.model.name, embedding_dim=config.model.embedding_dim,
      num_classes=source.num_classes,
      class_params=objective.class_params_for(config.loss.name),
      dtype=getattr(jnp, config.model.dtype), **kwargs)


def embed(apply, variables, split, augment, batch_size):
  """Embeddings (N, D) and labels (N,) of every example of a split, with
  `apply(variables, images)` (jitted once by the caller)."""
  embeddings, labels = [], []
  for batch in data.eval_dataset(split, augment, batch_size=batch_size,
                                 process_index=0, process_count=1):
    out = np.asarray(apply(variables, batch["image"]), np.float32)
    embeddings.append(out[batch["mask"]])
    labels.append(batch["label"][batch["mask"]])
  return np.concatenate(embeddings), np.concatenate(labels)


def evaluate(model, state, source, config) -> dict[str, Any]:
  """Exact and two-stage retrieval on the query/database protocol."""
  augment = data.preset(source.name, image_size=config.dataset.image_size)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  apply = jax.jit(model.apply)  # one compilation for both splits
  query, query_labels = embed(apply, variables,
                              source.splits[source.query_split], augment,
                              config.eval.batch_size)
  db, db_labels = embed(apply, variables,
                        source.splits[source.database_split], augment,
                        config.eval.batch_size)
  ks = tuple(k for k in config.eval.ks if k <= len(db))
  exclude_self = source.query_split == source.database_split
  results = {"exact": retrieval.evaluate_retrieval(
      query, query_labels, db, db_labels, ks=ks, exclude_self=exclude_self)}
  class_params = models.class_parameters(state.params)
  anchors = class_params.get("anchors")
  if anchors is not None:
    from ra_jax.losses import nearest_anchor
    results["nearest_anchor_accuracy"] = float(np.mean(
        np.asarray(nearest_anchor(query, anchors)) == query_labels))
    index = retrieval.Index.build(db, db_labels, anchors=np.asarray(anchors))
    for lists in config.eval.two_stage_lists:
      if lists > len(anchors):
        continue
      start = time.perf_counter()
      _, ids = index.search(query, max(ks), two_stage=True, num_lists=lists)
      seconds = time.perf_counter() - start
      results[f"two_stage_{lists}"] = {
          **retrieval.evaluate_ranking(ids, query_labels, db_labels, ks=ks),
          "seconds": seconds}
  return results


def _steps(config, num_train):
  if config.train.steps:
    return int(config.train.steps)
  return max(1, config.train.epochs * num_train //
             config.train.global_batch_size)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Trains, checkpoints, resumes, evaluates; returns the results dict."""
  if config.distributed:
    jax.distributed.initialize()
  _check_workdir(workdir, config)
  source = _source(config)
  train_split = source.splits[source.train_split]
  labels = data.split_labels(train_split)
  if config.dataset.shot:
    chosen = data.few_shot_indices(labels, config.dataset.shot,
                                   config.dataset.shot_seed)
    data.save_few_shot_indices(
        os.path.join(workdir, "few_shot_indices.json"), chosen,
        {"shot": config.dataset.shot, "seed": config.dataset.shot_seed})
    train_split, labels = data.SubsetSplit(train_split, chosen), labels[chosen]
  processes = jax.process_count()
  if config.train.global_batch_size % (processes * jax.local_device_count()):
    raise ValueError(f"train.global_batch_size {config.train.global_batch_size}"
                     f" is not divisible by the {jax.device_count()} devices")
  per_host = config.train.global_batch_size // processes
  augment = data.preset(source.name, image_size=config.dataset.image_size)
  pipeline = data.train_dataset(
      train_split, augment, global_batch_size=config.train.global_batch_size,
      seed=config.train.seed,
      images_per_class=config.dataset.images_per_class or None,
      labels=labels)
  total_steps = _steps(config, len(train_split))

  model = _model(config, source)
  image_shape = (config.dataset.image_size, config.dataset.image_size,
                 source.image_shape[-1] if source.image_shape else 3)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, *image_shape)))["params"]
  tx = optimizer.make_optimizer(dict(config.optim), total_steps, params)
  state = step_lib.create_state(model, tx,
                                jax.random.PRNGKey(config.train.seed),
                                image_shape)
  mesh = step_lib.data_mesh()
  state = jax.device_put(state, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec()))
  train_step = step_lib.shard_step(step_lib.make_train_step(
      model, tx, objective.loss_fn(dict(config.loss))), mesh)

  mngr = checkpoint.manager(os.path.join(workdir, "checkpoints"),
                            every=config.train.checkpoint_every,
                            keep=config.train.keep_checkpoints)
  iterator = iter(pipeline)
  restored = checkpoint.restore_latest(mngr, checkpoint.abstract(state))
  start_step = 0
  if restored is not None:
    start_step, state, data_state = restored
    iterator.set_state(data_state)
    print(f"resumed from step {start_step}", flush=True)

  log_path = os.path.join(workdir, "metrics.jsonl")
  start = time.perf_counter()
  for step in range(start_step, total_steps):
    batch = step_lib.global_batch(mesh, next(iterator))
    state, metrics = train_step(state, batch)
    if (step + 1) % config.train.log_every == 0 or step + 1 == total_steps:
      metrics = {k: float(v) for k, v in metrics.items()}
      if not all(math.isfinite(v) for v in metrics.values()):
        raise NonFiniteLossError(
            f"non-finite loss at step {step + 1}: {metrics}; the last good"
            f" checkpoint is step {mngr.latest_step()}")
      elapsed = time.perf_counter() - start
      rate = (step + 1 - start_step) * config.train.global_batch_size / elapsed
      eta = (total_steps - step - 1) * config.train.global_batch_size / rate
      if jax.process_index() == 0:
        print(f"step {step + 1}/{total_steps}  loss {metrics['loss']:.4f}"
              f"  {rate:.0f} img/s  eta {eta:.0f}s", flush=True)
        with open(log_path, "a") as f:
          f.write(json.dumps({"step": step + 1, "images_per_second": rate,
                              **metrics}) + "\n")
    checkpoint.save(mngr, step + 1, state, iterator.get_state(),
                    force=step + 1 == total_steps)
  mngr.wait_until_finished()

  results = {"dataset": source.describe(), "steps": total_steps,
             **evaluate(model, state, source, config)}
  if jax.process_index() == 0:
    path = os.path.join(workdir, "results.json")
    with open(path + ".tmp", "w") as f:
      json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)
  return results
