"""Forward + backward time of every loss on this machine.

For each (B, C, D) the losses are compiled once, then timed in interleaved
rounds (every loss once per round, so drifts in machine load hit all of them
alike); the table reports the median over rounds, and the class anchor margin
loss's ratio to softmax cross-entropy of the same shape.

  python -m benchmarks.loss_speed [--rounds 7] [--min_seconds 0.2] [--json out.json]
"""

import argparse
import itertools
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from configs import validated
from ra_jax import files, losses

# name -> (the registered loss, its hyperparameters): every loss with the
# values the configs train it with (configs/validated.py), and the triplet
# loss's other minings.
LOSSES = {name: (spec, dict(validated.LOSS.get(name, {})))
          for name, spec in losses.LOSSES.items()}
LOSSES.update({f"triplet_{mining}": (losses.LOSSES["triplet"],
                                     {**validated.LOSS["triplet"],
                                      "mining": mining})
               for mining in losses.MININGS
               if mining != validated.LOSS["triplet"]["mining"]})


def make_step(spec: losses.LossSpec, hyperparameters: dict):
  """jit(value_and_grad) w.r.t. the embeddings and every class parameter."""
  def total(e, y, params):
    return jnp.mean(spec(e, y, params, **hyperparameters))
  return jax.jit(jax.value_and_grad(total, argnums=(0, 2)))


def time_once(step, args, min_seconds):
  """Seconds per call, averaged over enough calls to last min_seconds."""
  calls, start = 0, time.perf_counter()
  while True:
    jax.block_until_ready(step(*args))
    calls += 1
    elapsed = time.perf_counter() - start
    if elapsed >= min_seconds:
      return elapsed / calls


def class_params(spec: losses.LossSpec, classes: int, dim: int,
                 scale: float, key) -> dict:
  """The loss's per-class parameters: (C, D) matrices of N(0, scale^2)
  entries, (C,) vectors of zeros."""
  keys = jax.random.split(key, max(1, len(spec.class_params)))
  return {name: (scale * jax.random.normal(k, (classes, dim))
                 if shape == "matrix" else jnp.zeros((classes,)))
          for k, (name, shape) in zip(keys, spec.class_params.items())}


def bench_shape(batch, classes, dim, rounds, min_seconds, names, anchor_scale):
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  e = jax.random.normal(keys[0], (batch, dim))
  y = jax.random.randint(keys[1], (batch,), 0, classes)
  steps = {}
  for name in names:
    spec, hyperparameters = LOSSES[name]
    params = class_params(spec, classes, dim, anchor_scale, keys[2])
    steps[name] = (make_step(spec, hyperparameters), (e, y, params))
    jax.block_until_ready(steps[name][0](*steps[name][1]))  # compile
  samples = {name: [] for name in names}
  for _ in range(rounds):
    for name, (step, args) in steps.items():
      samples[name].append(time_once(step, args, min_seconds))
  return {name: statistics.median(s) for name, s in samples.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--min_seconds", type=float, default=0.2)
  parser.add_argument("--batch", type=int, nargs="+", default=[256, 1024])
  parser.add_argument("--classes", type=int, nargs="+", default=[100, 1000])
  parser.add_argument("--dim", type=int, nargs="+", default=[128, 512])
  parser.add_argument("--losses", nargs="+", default=list(LOSSES),
                      choices=list(LOSSES))
  parser.add_argument(
      "--anchors", choices=["spread", "collapsed"], default="spread",
      help="spread: N(0, 1) per coordinate, every anchor pair > 2*margin apart"
      " at the configs' margin (the state training reaches and keeps);"
      " collapsed: N(0, 0.01^2), every pair too close, the repeller's worst"
      " case")
  parser.add_argument("--json", help="also write the results here")
  args = parser.parse_args()

  print(f"# jax {jax.__version__}, {jax.devices()[0].device_kind},"
        f" {platform.processor() or platform.machine()},"
        f" {args.anchors} anchors, median of {args.rounds} interleaved rounds,"
        " ms per forward+backward")
  header = ["B", "C", "D", *args.losses]
  if {"cam", "ce"} <= set(args.losses):
    header.append("CAM/CE")
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * len(header))
  results = []
  for batch, classes, dim in itertools.product(args.batch, args.classes,
                                               args.dim):
    medians = bench_shape(batch, classes, dim, args.rounds, args.min_seconds,
                          args.losses, 1.0 if args.anchors == "spread" else 0.01)
    row = [str(batch), str(classes), str(dim)]
    row += [f"{1e3 * medians[n]:.3f}" for n in args.losses]
    if "CAM/CE" in header:
      row.append(f"{medians['cam'] / medians['ce']:.2f}")
    print("| " + " | ".join(row) + " |", flush=True)
    results.append({"batch": batch, "classes": classes, "dim": dim,
                    "seconds": medians})
  if args.json:
    files.write_json(args.json, {"jax": jax.__version__,
                                 "rounds": args.rounds,
                                 "anchors": args.anchors, "results": results})


if __name__ == "__main__":
  main()
