"""Two runs at once, one core each, against one run on both cores: the
images/s the machine trains in all, for the study's queue (study/queue.sh
runs one study.grid process at a time; XLA's CPU code used ~1.6 of the 2
cores in earlier measurements, ../shared/notes/environment.md).

Each arrangement runs the bare train step (benchmarks/trainer_speed.py's
`bare_step`: the run's own jitted, sharded step on one batch already on the
device) in worker processes that compile first, then step for `--seconds`
from a common start time and report the images they trained:
  one: one worker, unpinned (what the queue does now);
  split: one worker per core, each pinned to its core with
         os.sched_setaffinity before jax is imported (so XLA sizes its
         thread pool to one core).
The arrangements alternate `--repeats` times; the medians of the summed
images/s and their ratio are printed and, with `--out`, written as JSON.

  python -m benchmarks.process_split [--config configs/fashion_mnist.py] \
      [--arg model=vit_ti7] [--set model.depth=6] [--seconds 40] [--repeats 3] [--out FILE]

Pause anything else that uses the cores first.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ARRANGEMENTS = ("one", "split")


def worker(config_file: str, arg: str, overrides: list, start: float,
           seconds: float, core: int) -> dict:
  if core >= 0:
    os.sched_setaffinity(0, {core})
  import importlib.util
  import jax
  from absl import logging
  logging.set_verbosity(logging.ERROR)
  from benchmarks.trainer_speed import bare_step
  from configs import common
  spec = importlib.util.spec_from_file_location("bench_config", config_file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  common.apply_overrides(config, overrides)
  step, state, batch = bare_step(config)
  state, metrics = step(state, batch)  # compiles
  jax.block_until_ready(metrics)
  wait = start - time.time()
  if wait < 0:
    raise SystemExit(f"compiling took {-wait:.0f} s past the common start;"
                     " raise --compile-seconds")
  time.sleep(wait)
  steps, began = 0, time.perf_counter()
  while time.perf_counter() - began < seconds:
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    steps += 1
  elapsed = time.perf_counter() - began
  return {"images": steps * config.train.global_batch_size,
          "seconds": elapsed, "core": core}


def arrangement_rate(name: str, args) -> float:
  cores = [-1] if name == "one" else sorted(os.sched_getaffinity(0))[:2]
  start = time.time() + args.compile_seconds
  procs = [subprocess.Popen(
      [sys.executable, "-m", "benchmarks.process_split", "--worker",
       "--config", args.config, "--arg", args.arg, "--start", str(start),
       "--seconds", str(args.seconds), "--core", str(core),
       *[f"--set={o}" for o in args.set]],
      stdout=subprocess.PIPE, text=True) for core in cores]
  reports = []
  for proc in procs:
    out, _ = proc.communicate()
    if proc.returncode:
      raise SystemExit(f"a {name} worker failed (exit {proc.returncode})")
    reports.append(json.loads(out.strip().splitlines()[-1]))
  return sum(r["images"] / r["seconds"] for r in reports)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/fashion_mnist.py")
  parser.add_argument("--arg", default="", help="the config's argument")
  parser.add_argument("--set", action="append", default=[],
                      help="config override FIELD=VALUE (repeatable)")
  parser.add_argument("--seconds", type=float, default=40.0)
  parser.add_argument("--compile-seconds", type=float, default=60.0,
                      help="time the workers get to build and compile")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default="")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--start", type=float, help=argparse.SUPPRESS)
  parser.add_argument("--core", type=int, default=-1, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(worker(args.config, args.arg, args.set, args.start,
                            args.seconds, args.core)))
    return 0
  if len(os.sched_getaffinity(0)) < 2:
    raise SystemExit("needs at least 2 cores")
  rates = {name: [] for name in ARRANGEMENTS}
  for repeat in range(args.repeats):
    for name in ARRANGEMENTS:
      rates[name].append(arrangement_rate(name, args))
    print(f"repeat {repeat}: " + ", ".join(
        f"{name} {rates[name][-1]:.0f} img/s" for name in ARRANGEMENTS),
          flush=True)
  medians = {name: statistics.median(r) for name, r in rates.items()}
  summary = {"date": time.strftime("%Y-%m-%d"), "config": args.config,
             "arg": args.arg, "overrides": args.set, "seconds": args.seconds,
             "images_per_second": rates, "medians": medians,
             "split_over_one": medians["split"] / medians["one"]}
  print(f"median: one {medians['one']:.0f} img/s, split"
        f" {medians['split']:.0f} img/s, ratio"
        f" {summary['split_over_one']:.3f}")
  if args.out:
    from ra_jax import files
    files.write_json(args.out, summary)
  return 0


if __name__ == "__main__":
  sys.exit(main())
