"""Input-pipeline throughput against what the trainer consumes.

Times, in one run on this machine: (1) the grain training pipeline
(shuffle, augmentation, batching) for 32x32x3 CIFAR-style images with the
cifar100 preset (random crop with 4-pixel padding + flip), from an in-memory
split; (2) the same for real Fashion-MNIST read through our TFDS builder's
array_record files (PNG decoding included; needs Debian's
dataset-fashion-mnist); (3) the ResNet-18 (CIFAR stem) jitted train step at
the same batch size, the consumer. Single-process grain, as the trainer runs.

  python benchmarks/data_speed.py [--batch 128] [--batches 30]
"""

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ra_jax import data  # pylint: disable=g-import-not-at-top


def pipeline_rate(ds, batches, repeats):
  """Median images/s of `batches` consecutive batches, over `repeats`."""
  it = iter(ds)
  next(it)  # warm-up
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    count = sum(len(next(it)["label"]) for _ in range(batches))
    rates.append(count / (time.perf_counter() - start))
  return statistics.median(rates)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--batches", type=int, default=30)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--train_steps", type=int, default=4)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  cifar_like = data.ArraySplit(
      rng.integers(0, 256, (10000, 32, 32, 3), np.uint8),
      rng.integers(0, 100, 10000))
  results = {}
  results["32x32x3, cifar100 preset, in memory"] = pipeline_rate(
      data.train_dataset(cifar_like, data.preset("cifar100"),
                         global_batch_size=args.batch, seed=0, process_index=0,
                         process_count=1), args.batches, args.repeats)
  from ra_jax.data.builders import fashion_mnist_idx
  if os.path.isdir(fashion_mnist_idx.DEBIAN_DIR):
    with tempfile.TemporaryDirectory() as tmp:
      source = data.get_source("fashion_mnist", data_dir=tmp)
      results["28x28x1 Fashion-MNIST, TFDS array_record + PNG decode"] = (
          pipeline_rate(data.train_dataset(
              source.splits["train"], data.preset("fashion_mnist"),
              global_batch_size=args.batch, seed=0, process_index=0,
              process_count=1), args.batches, args.repeats))
  from benchmarks.resnet_speed import flax_step_fn
  step = flax_step_fn(args.batch, "float32")
  step()  # compile
  times = []
  for _ in range(args.train_steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  consumed = args.batch / statistics.median(times)
  print(f"ResNet-18 (CIFAR stem) train step consumes {consumed:.1f} img/s"
        f" (batch {args.batch}, median of {args.train_steps})")
  print("| pipeline | img/s | x consumption |")
  print("|---|---|---|")
  for name, rate in results.items():
    print(f"| {name} | {rate:,.0f} | {rate / consumed:.0f}x |")


if __name__ == "__main__":
  main()
