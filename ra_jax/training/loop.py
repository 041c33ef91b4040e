"""`train_and_evaluate(config, workdir)`: the main job.

config -> Experiment (data source, per-host grain pipeline, model, optimizer)
-> global sharded batches -> jitted train step -> metrics (progress bar,
metrics.jsonl, TensorBoard), periodic evaluation, checkpoints (state + data
iterator) -> final evaluation -> `workdir/results.json`. Restarting with the
same workdir resumes from the newest readable checkpoint.
"""

import json
import math
import os
import time
from typing import Any

import jax
import ml_collections

from ra_jax.training import checkpoint, evaluation, experiment, objective
from ra_jax.training import runtime, writers
from ra_jax.training import step as step_lib


class NonFiniteLossError(RuntimeError):
  pass


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Trains, checkpoints, resumes, evaluates; returns the results dict."""
  runtime.initialize(config.get("distributed", "auto"))
  runtime.log_start()
  wall_start = time.time()
  experiment.check_workdir(workdir, config)
  exp = experiment.build(config, workdir)  # fails early on a missing dataset
  experiment.claim_workdir(workdir, config)
  train_step = step_lib.shard_step(step_lib.make_train_step(
      exp.model, exp.tx, objective.loss_fn(dict(config.loss))), exp.mesh)
  periodic = (evaluation.Periodic(exp.model, exp.source, exp.augment,
                                  config.eval)
              if config.eval.get("every", 0) else None)

  mngr = exp.checkpoints()
  iterator = iter(exp.train_pipeline())
  restored = checkpoint.restore_latest(mngr, exp.abstract_state())
  if restored is None:
    start_step, state = 0, exp.init_state()
  else:
    start_step, state, data_state = restored
    iterator.set_state(data_state)
    print(f"resumed from step {start_step}", flush=True)

  writer = writers.MetricWriter(workdir)
  bar = writers.progress_bar(start_step, exp.total_steps)
  batch_size = config.train.global_batch_size
  # images/s counts training only: from the end of the first step (after
  # compilation), less the time spent in periodic evaluation and saves.
  timer_start, timed_from, excluded, rate = None, start_step, 0.0, None
  for step in range(start_step, exp.total_steps):
    batch = step_lib.global_batch(exp.mesh, next(iterator))
    state, metrics = train_step(state, batch)
    done = step + 1
    if timer_start is None:
      jax.block_until_ready(metrics)
      timer_start, timed_from = time.perf_counter(), done
    scalars = {}
    if done % config.train.log_every == 0 or done == exp.total_steps:
      metrics = {k: float(v) for k, v in metrics.items()}  # waits for the step
      if not all(math.isfinite(v) for v in metrics.values()):
        raise NonFiniteLossError(
            f"non-finite loss at step {done}: {metrics}; the last good"
            f" checkpoint is step {mngr.latest_step()} in {mngr.directory}")
      scalars.update({f"train/{k}": v for k, v in metrics.items()})
      postfix = {k: f"{v:.4g}" for k, v in metrics.items()
                 if k not in ("grad_norm", "min_anchor_distance",
                              "mean_anchor_norm")}
      if done > timed_from:
        rate = (done - timed_from) * batch_size / (
            time.perf_counter() - timer_start - excluded)
        scalars["train/images_per_second"] = rate
        postfix["img/s"] = f"{rate:.0f}"
      bar.set_postfix(postfix, refresh=False)
    last = done == exp.total_steps
    evaluate_now = periodic is not None and (
        done % config.eval.every == 0 or last)
    if evaluate_now or last or mngr.should_save(done):
      jax.block_until_ready(state)  # the step's own time is training time
    paused = time.perf_counter()
    if evaluate_now:
      scalars.update(periodic(state))
    if scalars:
      writer.write_scalars(done, scalars)
    bar.update(1)
    checkpoint.save(mngr, done, state, iterator.get_state(), force=last)
    excluded += time.perf_counter() - paused
  mngr.wait_until_finished()
  bar.close()

  results = {"dataset": exp.source.describe(), "steps": exp.total_steps,
             **evaluation.evaluate(exp.model, state, exp.source, exp.augment,
                                   config.eval,
                                   apply=periodic and periodic.apply)}
  if rate is not None:
    results["train_images_per_second"] = rate
  results["run"] = {"seed": config.train.seed, "resumed_from": start_step,
                    "wall_seconds": time.time() - wall_start,
                    **runtime.environment()}
  writer.close()
  if runtime.is_writer():
    write_json(os.path.join(workdir, "results.json"), results)
  return results


def write_json(path: str, payload: Any) -> None:
  """Atomically: a reader never sees half a file."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=1)
  os.replace(tmp, path)
