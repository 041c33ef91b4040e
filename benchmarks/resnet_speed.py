"""Train-step speed of ra_jax's ResNet-18 against the same network in PyTorch.

ResNet-18 with the CIFAR stem, 32x32x3 inputs, batch 128, one training step
= forward + backward + SGD-momentum update, on this machine's CPU. The two
frameworks alternate step by step in one process (so load drifts hit both),
after warm-up; the script prints the median images/s of each and the ratio.

  python benchmarks/resnet_speed.py [--steps 6] [--batch 128]
  python benchmarks/resnet_speed.py --sweep   # XLA CPU flag variants, one
                                              # subprocess each (flags are
                                              # read when the backend starts)
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

# Flag sets tried by --sweep (XLA reads XLA_FLAGS once, at backend start).
SWEEP = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "no_thunks": "--xla_cpu_use_thunk_runtime=false",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    "concurrency_sched": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
}


def flax_step_fn(batch, dtype_name):
  import jax
  import jax.numpy as jnp
  import optax
  from ra_jax import models

  model = models.get_backbone("resnet18_cifar", num_classes=10,
                              dtype=getattr(jnp, dtype_name))
  images = jax.random.normal(jax.random.PRNGKey(0), (batch, 32, 32, 3))
  labels = jnp.arange(batch) % 10
  variables = model.init(jax.random.PRNGKey(1), images[:2])
  tx = optax.sgd(0.1, momentum=0.9)
  state = (variables["params"], variables["batch_stats"],
           tx.init(variables["params"]))

  def step(state, images, labels):
    params, stats, opt_state = state

    def loss_fn(params):
      logits, updates = model.apply({"params": params, "batch_stats": stats},
                                    images, train=True,
                                    mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(
          logits.astype(jnp.float32), labels).mean()
      return loss, updates["batch_stats"]

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), stats, opt_state), loss

  step = jax.jit(step, donate_argnums=0)
  holder = {"state": state}

  def run():
    holder["state"], loss = step(holder["state"], images, labels)
    jax.block_until_ready(loss)

  return run


def torch_step_fn(batch, channels_last):
  import torch
  sys.path.insert(0, str(REPO))
  from tests.models import torch_reference

  model = torch_reference.ResNet((2, 2, 2, 2), False, num_classes=10,
                                 stem="cifar")
  images = torch.randn(batch, 3, 32, 32)
  labels = torch.arange(batch) % 10
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
  model.train()

  def run():
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    opt.step()

  return run


def measure(args):
  import jax
  import torch
  runners = {
      "ra_jax": flax_step_fn(args.batch, args.dtype),
      "torch": torch_step_fn(args.batch, channels_last=False),
      "torch_channels_last": torch_step_fn(args.batch, channels_last=True),
  }
  for run in runners.values():  # compile / warm up
    for _ in range(args.warmup):
      run()
  seconds = {name: [] for name in runners}
  for _ in range(args.steps):
    for name, run in runners.items():
      start = time.perf_counter()
      run()
      seconds[name].append(time.perf_counter() - start)
  ips = {name: args.batch / statistics.median(s) for name, s in seconds.items()}
  return {
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "jax": jax.__version__, "torch": torch.__version__,
      "torch_threads": torch.get_num_threads(), "batch": args.batch,
      "dtype": args.dtype, "steps": args.steps,
      "images_per_second": ips,
      "ratio_vs_torch": ips["ra_jax"] / ips["torch"],
      "ratio_vs_torch_channels_last": ips["ra_jax"] /
                                      ips["torch_channels_last"],
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=6)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--sweep", action="store_true")
  parser.add_argument("--json", help="write the result(s) here")
  args = parser.parse_args()
  if not args.sweep:
    result = measure(args)
    print(json.dumps(result, indent=1))
    if args.json:
      pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
    return
  results = {}
  print("| XLA flags | ra_jax img/s | torch img/s | torch channels_last img/s"
        " | ra_jax / torch | ra_jax / channels_last |")
  print("|---|---|---|---|---|---|")
  for name, flags in SWEEP.items():
    env = dict(os.environ, XLA_FLAGS=flags)
    cmd = [sys.executable, __file__, "--batch", str(args.batch), "--steps",
           str(args.steps), "--warmup", str(args.warmup), "--dtype", args.dtype]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          cwd=REPO)
    if proc.returncode:
      print(f"| {name} `{flags}` | failed: {proc.stderr.strip()[-200:]} |")
      continue
    r = json.loads(proc.stdout[proc.stdout.index("{"):])
    results[name] = r
    ips = r["images_per_second"]
    print(f"| {name} `{flags}` | {ips['ra_jax']:.1f} | {ips['torch']:.1f} |"
          f" {ips['torch_channels_last']:.1f} | {r['ratio_vs_torch']:.2f} |"
          f" {r['ratio_vs_torch_channels_last']:.2f} |", flush=True)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
  main()
