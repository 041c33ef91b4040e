"""The class anchor margin loss at many classes: every anchor pair (plain)
and the neighbour list (fast path) against softmax cross-entropy.

For each (C, D, regime), forward + backward of the mean loss over a batch
of B embeddings, w.r.t. the embeddings and the (C, D) class matrix, median
of `--repeats` calls after a compiling one, and XLA's temporary memory for
the compiled program:
- separated: anchors N(0, s^2) with s such that the typical pair is three
  cutoffs (2m + skin) apart: no pair inside 2m, the state training reaches;
- collapsed: N(0, 0.01^2), every pair inside 2m (the list overflows and
  the fast path computes every pair, as the plain loss does).
The margin is the default sqrt(D/2); the skin `--skin` x m.

In the separated regime a short training trajectory then measures the
fast path with its rebuilds: `--steps` SGD steps (momentum 0.9, the
validated learning rate times the anchor multiplier) on the anchors and the
batch's embeddings, each step bringing the list up to date, against the
same steps with cross-entropy; plus the time of one rebuild and how many
steps apart rebuilds may come for the fast path to stay within 1.5x CE.

A call predicted (C^2 scaling from the largest C measured for that method)
to take longer than `--budget_seconds` over its repeats is skipped and
recorded as such. An existing `--out` file from the same machine and jax is
added to: its rows for other (regime, D, C) are kept, the ones measured
again replaced.

  python -m benchmarks.many_classes [--classes 1000 10000 30000 100000]
      [--dims 128 512] [--repeats 5] [--out results/many_classes_DATE.json]
"""

import argparse
import datetime
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import validated
from ra_jax import files, losses
from ra_jax.timing import median_seconds

CAM = losses.get_loss("cam")
CE = losses.get_loss("ce")


def anchors_for(regime: str, classes: int, dim: int, cutoff: float, key):
  if regime == "collapsed":
    scale = 0.01
  else:  # typical distance s * sqrt(2D) = 3 cutoffs
    scale = 3.0 * cutoff / np.sqrt(2.0 * dim)
  return scale * jax.random.normal(key, (classes, dim))


def batch_for(anchors, batch: int, margin: float, key):
  """Labels uniform over the classes; embeddings their anchor plus noise of
  norm about m."""
  k1, k2 = jax.random.split(key)
  labels = jax.random.randint(k1, (batch,), 0, anchors.shape[0])
  noise = jax.random.normal(k2, (batch, anchors.shape[1]))
  return anchors[labels] + margin / np.sqrt(anchors.shape[1]) * noise, labels


def losses_of(margin: float):
  """name -> mean loss of (embeddings, labels, class matrix, neighbours)."""
  def cam(e, y, c, neighbors=None):
    return jnp.mean(CAM(e, y, {"anchors": c}, neighbors=neighbors,
                        margin=margin))

  def ce(e, y, c, neighbors=None):
    del neighbors
    return jnp.mean(CE(e, y, {"kernel": c, "bias": jnp.zeros(c.shape[0])}))
  return {"cam": cam, "ce": ce}


def temp_mib(compiled) -> float | None:
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return analysis.temp_size_in_bytes / 2**20


def time_method(fn, args, repeats: int) -> dict:
  step = jax.jit(jax.value_and_grad(fn, argnums=(0, 2)))
  compiled = step.lower(*args).compile()
  seconds, _ = median_seconds(lambda: compiled(*args), repeats)
  return {"ms": 1e3 * seconds, "temp_mib": temp_mib(compiled)}


def trajectory(fn, anchors, margin, lists, batches, learning_rate):
  """Seconds per SGD step (momentum 0.9) over `batches`, the list (if any)
  brought up to date before each step; (seconds per step, builds)."""
  grad = jax.value_and_grad(fn, argnums=(0, 2))

  @jax.jit
  def step(anchors, velocity, neighbors, e, y):
    if neighbors is not None:
      neighbors = lists["update"](anchors, neighbors)
    _, (_, g) = grad(e, y, anchors, neighbors)
    velocity = 0.9 * velocity + g
    return anchors - learning_rate * velocity, velocity, neighbors

  neighbors = lists["build"](anchors) if lists else None
  velocity = jnp.zeros_like(anchors)
  state = step(anchors, velocity, neighbors, *batches[0])  # compiles
  jax.block_until_ready(state)
  state = (anchors, velocity, neighbors)
  start = time.perf_counter()
  for e, y in batches:
    state = step(*state, e, y)
  jax.block_until_ready(state)
  seconds = (time.perf_counter() - start) / len(batches)
  builds = int(state[2].builds) if lists else 0
  return seconds, builds


def predicted_seconds(measured: dict, method: str, regime: str, dim: int,
                      classes: int) -> float | None:
  """C^2 extrapolation from the largest smaller C measured."""
  known = [(c, ms) for (m, r, d, c), ms in measured.items()
           if (m, r, d) == (method, regime, dim) and c < classes]
  if not known:
    return None
  c, ms = max(known)
  return ms / 1e3 * (classes / c) ** 2


def _row_key(row: dict) -> tuple:
  return row["regime"], row["dim"], row["num_classes"], row["batch"]


def earlier_rows(path: str, machine: dict) -> list[dict]:
  """The rows already in `path`, if it holds a run of this benchmark on the
  same machine and jax (the date may differ); [] if there is no file."""
  if not files.exists(path):
    return []
  earlier = files.read_json(path)
  same = ("jax", "device", "cpu", "cores")
  if {k: earlier.get("machine", {}).get(k) for k in same} != {
      k: machine[k] for k in same}:
    raise SystemExit(f"{path} holds rows from another machine"
                     f" ({earlier.get('machine')}); pass another --out")
  return earlier.get("rows", [])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--classes", type=int, nargs="+",
                      default=[1000, 10000, 30000, 100000])
  parser.add_argument("--dims", type=int, nargs="+", default=[128, 512])
  parser.add_argument("--regimes", nargs="+",
                      default=["separated", "collapsed"],
                      choices=["separated", "collapsed"])
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--skin", type=float, default=0.5,
                      help="the list's skin as a fraction of the margin")
  parser.add_argument("--steps", type=int, default=100,
                      help="SGD steps of the separated-regime trajectory")
  parser.add_argument("--budget_seconds", type=float, default=200.0)
  parser.add_argument("--out", default=os.path.join(
      "results", f"many_classes_{datetime.date.today().isoformat()}.json"))
  args = parser.parse_args()
  learning_rate = (validated.OPTIM["cam"]["learning_rate"] *
                   validated.OPTIM["cam"]["anchor_lr_mult"])
  machine = {"jax": jax.__version__, "device": jax.devices()[0].device_kind,
             "cpu": platform.processor() or platform.machine(),
             "cores": os.cpu_count(), "date": datetime.date.today().isoformat()}
  print(f"# {machine}; B={args.batch}, median of {args.repeats}, ms per"
        " forward+backward", flush=True)
  rows, measured = [], {}
  kept = earlier_rows(args.out, machine)
  for regime in args.regimes:
    for dim in args.dims:
      margin = losses.default_margin(dim)
      skin = args.skin * margin
      cutoff = 2.0 * margin + skin
      fns = losses_of(margin)
      for classes in sorted(args.classes):
        key = jax.random.PRNGKey(classes + dim)
        anchors = anchors_for(regime, classes, dim, cutoff, key)
        e, y = batch_for(anchors, args.batch, margin, jax.random.fold_in(
            key, 1))
        build = jax.jit(lambda a: losses.build_neighbors(
            a, margin, skin=skin))
        build_seconds, neighbors = median_seconds(lambda: build(anchors), 1)
        row = {"regime": regime, "dim": dim, "num_classes": classes,
               "batch": args.batch, "margin": margin, "skin": skin,
               "listed_pairs": int(neighbors.count),
               "capacity": int(neighbors.pairs.shape[0]),
               "overflowed": int(neighbors.count) > neighbors.pairs.shape[0],
               "build_ms": 1e3 * build_seconds}
        for name, fn, call_args in (
            ("ce", fns["ce"], (e, y, anchors)),
            ("cam_plain", fns["cam"], (e, y, anchors)),
            ("cam", fns["cam"], (e, y, anchors, neighbors))):
          guess = predicted_seconds(measured, name, regime, dim, classes)
          if guess is not None and guess * (args.repeats + 1) > \
              args.budget_seconds:
            row[f"{name}_skipped"] = (
                f"predicted {guess:.0f} s per call (C^2 from a smaller C),"
                f" over the {args.budget_seconds:.0f} s budget")
            continue
          repeats = args.repeats
          if guess is not None and guess * (repeats + 1) > \
              args.budget_seconds / 2:
            repeats = 2
          result = time_method(fn, call_args, repeats)
          row[f"{name}_ms"] = result["ms"]
          row[f"{name}_temp_mib"] = result["temp_mib"]
          row[f"{name}_repeats"] = repeats
          measured[(name, regime, dim, classes)] = result["ms"]
        if "cam_ms" in row and "ce_ms" in row:
          row["cam_over_ce"] = row["cam_ms"] / row["ce_ms"]
        if regime == "separated" and args.steps:
          batches = [batch_for(anchors, args.batch, margin,
                               jax.random.fold_in(key, 2 + i))
                     for i in range(args.steps)]
          lists = {"build": build, "update": lambda a, n: (
              losses.update_neighbors(a, n, margin, skin=skin))}
          cam_step, builds = trajectory(fns["cam"], anchors, margin, lists,
                                        batches, learning_rate)
          ce_step, _ = trajectory(fns["ce"], anchors, margin, None, batches,
                                  learning_rate)
          row.update({"steps": args.steps, "cam_step_ms": 1e3 * cam_step,
                      "ce_step_ms": 1e3 * ce_step,
                      "step_ratio": cam_step / ce_step,
                      "builds_in_steps": builds})
          room = 1.5 * ce_step - cam_step
          row["rebuild_every_at_least"] = (build_seconds / room if room > 0
                                           else None)
        rows.append(row)
        print({k: (round(v, 2) if isinstance(v, float) else v)
               for k, v in row.items()}, flush=True)
        measured_keys = {_row_key(r) for r in rows}
        files.write_json(args.out, {
            "machine": machine, "args": vars(args),
            "rows": [r for r in kept if _row_key(r) not in measured_keys] +
                    rows})
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
