"""The trainer end to end against its bare train step, in one process.

(1) bare: the run's own jitted, sharded train step (same model, loss,
optimizer, batch size) fed one batch that already sits on the device,
timed over `--steps` steps; (2) trainer: `ra_jax.training.loop.train` on
real Fashion-MNIST for `--steps` steps after its first (compiling) step,
the images/s it reports itself (input pipeline, host label check, device
transfer, logging; checkpoints and evaluation off). The two alternate
`--repeats` times; medians and their ratio are printed and, with `--out`,
written as JSON. Needs Debian's dataset-fashion-mnist.

  python -m benchmarks.trainer_speed [--steps 60] [--repeats 3] \
      [--set data.cache=none] [--out results/trainer_speed.json]

The configuration is configs/fashion_mnist.py's (the validated recipe).
"""

import argparse
import statistics
import sys
import tempfile
import time

import jax
import numpy as np


def bare_step(config):
  """The run's own jitted, sharded train step, its initial state and one
  batch of random images already on the device: (step, state, batch)."""
  from ra_jax.training import experiment
  from ra_jax.training import step as step_lib
  with tempfile.TemporaryDirectory() as tmp:
    exp = experiment.build(config, tmp)
  step = step_lib.shard_step(
      step_lib.make_train_step(exp.model, exp.tx, exp.loss_fn), exp.mesh)
  batch_size = config.train.global_batch_size
  rng = np.random.default_rng(0)
  per_class = config.dataset.images_per_class or 1
  labels = np.repeat(np.arange(batch_size // per_class) %
                     exp.source.num_classes, per_class).astype(np.int32)
  images = rng.standard_normal((batch_size, *exp.image_shape), np.float32)
  batch = step_lib.global_batch(exp.mesh, {"image": images, "label": labels})
  return step, exp.init_state(), batch


def bare_rate(config, steps: int) -> float:
  step, state, batch = bare_step(config)
  state, metrics = step(state, batch)  # compiles
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch)
  jax.block_until_ready((state, metrics))
  return steps * config.train.global_batch_size / (time.perf_counter() - start)


def trainer_rate(config, steps: int) -> float:
  from ra_jax.training import loop
  config = config.copy_and_resolve_references()
  config.train.epochs, config.train.steps = 0, steps + 1
  config.train.checkpoint_every = 10 ** 9
  config.eval.every = 0
  with tempfile.TemporaryDirectory() as tmp:
    return loop.train(config, tmp).images_per_second


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--loss", default="cam")
  parser.add_argument("--set", action="append", default=[],
                      help="config override FIELD=VALUE (repeatable)")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  from configs import common, fashion_mnist
  config = fashion_mnist.get_config(f"loss={args.loss}")
  common.apply_overrides(config, args.set)
  bare, trainer = [], []
  for repeat in range(args.repeats):
    bare.append(bare_rate(config, args.steps))
    trainer.append(trainer_rate(config, args.steps))
    print(f"repeat {repeat}: bare {bare[-1]:.0f} img/s, trainer"
          f" {trainer[-1]:.0f} img/s", flush=True)
  summary = {
      "date": time.strftime("%Y-%m-%d"), "loss": args.loss,
      "overrides": args.set, "steps": args.steps,
      "batch_size": config.train.global_batch_size,
      "bare_images_per_second": bare, "trainer_images_per_second": trainer,
      "bare_median": statistics.median(bare),
      "trainer_median": statistics.median(trainer),
  }
  summary["ratio"] = summary["trainer_median"] / summary["bare_median"]
  print(f"median: bare {summary['bare_median']:.0f} img/s, trainer"
        f" {summary['trainer_median']:.0f} img/s, ratio"
        f" {summary['ratio']:.3f}")
  if args.out:
    from ra_jax import files
    files.write_json(args.out, summary)
  return 0


if __name__ == "__main__":
  sys.exit(main())
