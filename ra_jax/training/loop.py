"""`train_and_evaluate(config, workdir)`: the main job.

config -> Experiment (data source, per-host grain pipeline, model, optimizer)
-> global sharded batches -> jitted train step -> metrics (progress bar,
metrics.jsonl, TensorBoard), periodic evaluation, checkpoints (state + data
iterator) -> final evaluation -> `workdir/results.json`. Restarting with the
same workdir resumes from the newest readable checkpoint.

In a multi-process job, call `runtime.initialize(config.distributed)` first
(`python -m ra_jax.train` does).
"""

import dataclasses
import math
import time
from typing import Any, Callable, Optional

import jax
import ml_collections
import numpy as np

from ra_jax import data, files
from ra_jax.training import checkpoint, evaluation, experiment, preemption
from ra_jax.training import runtime, writers
from ra_jax.training import workdir as workdir_lib
from ra_jax.training import step as step_lib
from ra_jax.training.throughput import Throughput


class NonFiniteLossError(RuntimeError):
  """The loss (or another step metric) turned non-finite at `step`."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


@dataclasses.dataclass
class Trained:
  """What `train` leaves: the run's parts, its final state, where it
  started (0 or the resumed step), its training images/s (None when no
  step was timed) and the subset evaluator's jitted apply (or None)."""
  exp: experiment.Experiment
  state: step_lib.TrainState
  start_step: int
  images_per_second: Optional[float]
  apply: Optional[Callable]


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Trains, checkpoints, resumes, evaluates; returns the results dict."""
  wall_start = time.time()
  trained = train(config, workdir)
  exp = trained.exp
  results = evaluation.final_results(exp, trained.state, exp.total_steps,
                                     apply=trained.apply,
                                     progress=runtime.is_writer())
  if trained.images_per_second is not None:
    results["train_images_per_second"] = trained.images_per_second
  if config.train.get("save_params", False) and runtime.is_writer():
    checkpoint.save_params(workdir_lib.path(workdir, workdir_lib.PARAMS),
                           exp.total_steps,
                           evaluation.variables_of(trained.state))
  results["run"] = {"seed": config.train.seed,
                    "resumed_from": trained.start_step,
                    "wall_seconds": time.time() - wall_start,
                    **runtime.environment()}
  if runtime.is_writer():
    files.write_json(workdir_lib.path(workdir, workdir_lib.RESULTS), results)
  return results


def train(config: ml_collections.ConfigDict, workdir: str) -> Trained:
  """Trains to `exp.total_steps` (resuming from the newest checkpoint),
  logging metrics and subset evaluations and saving checkpoints; no final
  evaluation."""
  runtime.log_start()
  workdir_lib.check(workdir, config)
  exp = experiment.build(config, workdir)  # fails early on a missing dataset
  workdir_lib.claim(workdir, config)
  if runtime.is_writer():
    exp.save_few_shot_selection()
  train_step = step_lib.shard_step(
      step_lib.make_train_step(exp.model, exp.tx, exp.loss_fn,
                               exp.neighbor_lists), exp.mesh)
  evaluator = (evaluation.SubsetEvaluator(exp.model, exp.source, exp.augment,
                                          config.eval, exp.loss)
               if config.eval.get("every", 0) else None)

  # Closed on every exit, failures included, so that orbax's threads and
  # metadata stores do not outlive the run. SIGTERM during training saves
  # a checkpoint and stops (preemption.py).
  with exp.checkpoints() as mngr, preemption.StopRequests() as stop:
    iterator = data.batches(exp.train_pipeline(),
                            config.train.get("prefetch_batches",
                                               data.DEFAULT_PREFETCH_BATCHES))
    restored = checkpoint.restore_latest(mngr, exp.abstract_state().saved())
    if restored is None:
      start_step, state = 0, exp.init_state()
    else:
      start_step, saved, data_state = restored
      state = step_lib.TrainState.from_saved(saved)
      iterator.set_state(data_state)
      print(f"resumed from step {start_step}", flush=True)
    state = step_lib.with_neighbors(state, exp.neighbor_lists, exp.mesh)

    writer = writers.MetricWriter(workdir)
    bar = writers.progress_bar(start_step, exp.total_steps)
    clock = Throughput(config.train.global_batch_size)
    for step in range(start_step, exp.total_steps):
      batch = next(iterator)
      _check_labels(batch["label"], exp.source.num_classes, step + 1)
      state, metrics = train_step(state, step_lib.global_batch(exp.mesh, batch))
      done = step + 1
      if not clock.started:  # the first step compiles: not training time
        jax.block_until_ready(metrics)
        clock.start(done)
      last = done == exp.total_steps
      scalars = {}
      if done % config.train.log_every == 0 or last:
        scalars = _checked_scalars(metrics, done, mngr, config.optim)
        rate = clock.images_per_second(done)
        if rate is not None:
          scalars["train/images_per_second"] = rate
        bar.set_postfix(_postfix(scalars, exp.loss.progress), refresh=False)
      stopping = not last and stop.requested(done)
      evaluate_now = evaluator is not None and not stopping and (
          done % config.eval.every == 0 or last)
      if evaluate_now or last or stopping or mngr.should_save(done):
        jax.block_until_ready(state)  # the step's own time is training time
      with clock.paused():
        if evaluate_now:
          scalars.update(evaluator(state))
        if scalars:
          writer.write_scalars(done, scalars)
        bar.update(1)
        if checkpoint.save(mngr, done, state.saved(),
                           iterator.get_state(), force=last or stopping):
          writer.flush()  # the metrics as far as the checkpoint goes
      if stopping:
        mngr.wait_until_finished()
        bar.close()
        writer.close()
        raise preemption.Preempted(done, files.absolute(mngr.directory))
    rate = clock.images_per_second(exp.total_steps)
  bar.close()
  writer.close()
  return Trained(exp, state, start_step, rate,
                 evaluator.apply if evaluator is not None else None)


def _check_labels(labels, num_classes: int, step: int) -> None:
  """Labels outside [0, C) would silently train another class (a gather
  clamps); the host sees them before the device does."""
  labels = np.asarray(labels)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"step {step}: the training data has labels from"
                     f" {labels.min()} to {labels.max()}, outside [0,"
                     f" {num_classes}) (the dataset's classes)")


def _checked_scalars(metrics: dict, step: int, mngr,
                     optim) -> dict[str, float]:
  """The step's metrics as floats under train/; a NonFiniteLossError naming
  the step, the last good checkpoint and the settings to change if any is
  not finite."""
  values = {k: float(v) for k, v in metrics.items()}  # waits for the step
  if not all(math.isfinite(v) for v in values.values()):
    clip = optim.get("grad_clip", 0.0)
    raise NonFiniteLossError(
        f"non-finite loss at step {step}: {values}; the last good"
        f" checkpoint is step {mngr.latest_step()} in {mngr.directory}."
        f" The recipe diverged: lower optim.learning_rate (now"
        f" {optim.learning_rate}), " + ("set optim.grad_clip (now 0, off;"
        " e.g. 1.0)" if not clip else f"lower optim.grad_clip (now {clip})")
        + f" or use another optim.name (now {optim.get('name', '?')!r};"
        " a ViT diverges on the ResNets' SGD recipe where adamw trains)",
        step)
  return {f"train/{k}": v for k, v in values.items()}


def _postfix(scalars: dict[str, float], terms: tuple[str, ...]
             ) -> dict[str, str]:
  """The progress bar's loss, the loss's own progress terms and images/s."""
  shown = {name: scalars.get(f"train/{name}")
           for name in ("loss",) + terms}
  out = {k: f"{v:.4g}" for k, v in shown.items() if v is not None}
  if "train/images_per_second" in scalars:
    out["img/s"] = f"{scalars['train/images_per_second']:.0f}"
  return out
