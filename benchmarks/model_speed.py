"""Training speed and model FLOP utilisation (MFU) of a backbone on this
machine's accelerator(s), through the trainer's own sharded train step.

One step = the trainer's `make_train_step` (forward in `--dtype`, the loss
in float32, backward, SGD-momentum update with weight decay), jitted over a
1-D data mesh of every local device with the state replicated and donated,
on one batch of random images that already sits on the devices (so the
input pipeline is not measured; `benchmarks/trainer_speed.py` measures it).
After a compiling step, `--repeats` timings of `--steps` steps each; the
median is reported.

  images/s = steps * batch / seconds
  MFU = FLOPs per step * steps / seconds / (peak FLOP/s per device * devices)

FLOPs per step are XLA's own count for the compiled step (its cost
analysis: a multiply-add is 2 FLOPs; forward, backward and update). The
peak is the device's dense bf16 (or fp32) datasheet figure from
`PEAK_TFLOPS`, or `--peak_tflops`; with neither, MFU is not reported.

  python -m benchmarks.model_speed --model resnet50 --image_size 224 \
      --batch 256 --dtype bfloat16 [--steps 20] [--repeats 5] [--json out]
"""

import argparse
import platform
import statistics
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ra_jax import files, losses, models
from ra_jax.training import objective, optimizer
from ra_jax.training import step as step_lib

# Dense (no sparsity) peak TFLOP/s per device from the vendors' datasheets,
# by a substring of jax's device_kind (first match wins), for bf16 and fp32
# (fp32 on NVIDIA: TF32 tensor cores, which XLA uses for fp32 matmuls by
# default).
PEAK_TFLOPS = (
    ("H200", {"bfloat16": 989.0, "float32": 494.0}),
    ("H100 PCIe", {"bfloat16": 756.0, "float32": 378.0}),
    ("H100", {"bfloat16": 989.0, "float32": 494.0}),
    ("A100", {"bfloat16": 312.0, "float32": 156.0}),
    ("L4", {"bfloat16": 121.0, "float32": 60.0}),
    ("TPU v6", {"bfloat16": 918.0}),
    ("TPU v5p", {"bfloat16": 459.0}),
    ("TPU v5", {"bfloat16": 197.0}),  # v5e ("TPU v5 lite")
    ("TPU v4", {"bfloat16": 275.0}),
)


def model_flops_utilization(flops_per_image: float, images_per_second: float,
                            peak_tflops_per_device: float,
                            devices: int) -> float:
  """MFU: the FLOP/s the model's training steps achieve over the devices'
  datasheet peak."""
  return (flops_per_image * images_per_second /
          (peak_tflops_per_device * 1e12 * devices))


def peak_tflops(device_kind: str, dtype: str) -> Optional[float]:
  """The datasheet peak of one device for `dtype`, or None if unknown."""
  for key, peaks in PEAK_TFLOPS:
    if key.lower() in device_kind.lower():
      return peaks.get(dtype)
  return None


def compiled_flops(compiled) -> Optional[float]:
  """XLA's FLOP count of a compiled computation (None if it gives none)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per module
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def measure(model_name: str, *, image_size: int, batch: int, dtype: str,
            loss: str = "cam", embedding_dim: int = 128,
            num_classes: int = 1000, steps: int = 20, repeats: int = 5,
            model_kwargs: Optional[dict[str, Any]] = None,
            peak: Optional[float] = None) -> dict[str, Any]:
  """Times the train step of `model_name` (see the module docstring) and
  returns images/s (median and every repeat), FLOPs per step and MFU."""
  mesh = step_lib.data_mesh()
  if batch % mesh.size:
    raise ValueError(f"--batch {batch} is not a multiple of the"
                     f" {mesh.size} devices")
  spec = losses.get_loss(loss)
  model = models.get_model(
      model_name, embedding_dim=embedding_dim, num_classes=num_classes,
      class_params=spec.class_params, l2_normalize=spec.geometry == "sphere",
      dtype=jnp.dtype(dtype), **(model_kwargs or {}))
  image_shape = (image_size, image_size, 3)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, *image_shape)))
  tx = optimizer.make_optimizer(
      {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9,
       "nesterov": True, "weight_decay": 5e-5, "anchor_lr_mult": 1.0,
       "warmup_steps": 0, "grad_clip": 0.0}, 10 ** 6, shapes["params"])
  train_step = step_lib.shard_step(step_lib.make_train_step(
      model, tx, objective.loss_fn({"name": loss})), mesh)
  state = jax.jit(lambda rng: step_lib.create_state(model, tx, rng,
                                                     image_shape),
                  out_shardings=jax.sharding.NamedSharding(
                      mesh, jax.sharding.PartitionSpec()))(
                          jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  local = {"image": rng.standard_normal((batch, *image_shape), np.float32),
           "label": (np.arange(batch) % num_classes).astype(np.int32)}
  data = step_lib.global_batch(mesh, local)

  compiled = train_step.lower(state, data).compile()
  flops = compiled_flops(compiled)
  state, metrics = compiled(state, data)
  jax.block_until_ready(metrics)
  if not np.isfinite(float(metrics["loss"])):
    raise FloatingPointError(f"{model_name}: non-finite loss at step 1")
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, data)
    jax.block_until_ready((state, metrics))
    rates.append(steps * batch / (time.perf_counter() - start))
  rate = statistics.median(rates)
  device = jax.devices()[0]
  peak = peak if peak is not None else peak_tflops(device.device_kind, dtype)
  mfu = (model_flops_utilization(flops / batch, rate, peak, mesh.size)
         if flops and peak else None)
  return {"model": model_name, "image_size": image_size, "batch": batch,
          "dtype": dtype, "loss": loss, "embedding_dim": embedding_dim,
          "num_classes": num_classes, "devices": mesh.size,
          "device_kind": device.device_kind, "platform": device.platform,
          "steps": steps, "repeats": repeats, "images_per_second": rate,
          "images_per_second_repeats": rates, "flops_per_step": flops,
          "flops_per_image": flops / batch if flops else None,
          "peak_tflops_per_device": peak, "mfu": mfu,
          "final_loss": float(metrics["loss"])}


def _model_kwargs(args) -> dict:
  """The registry's options the flags set: a ResNet's width; a ViT's depth,
  and its image size (its position embedding depends on it)."""
  kwargs = {} if args.width is None else {"width": args.width}
  if args.model.startswith("vit_"):
    kwargs["image_size"] = args.image_size
    if args.depth is not None:
      kwargs["depth"] = args.depth
  elif args.depth is not None:
    raise SystemExit("--depth: ViT models only")
  return kwargs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet50")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--dtype", default="bfloat16",
                      choices=["bfloat16", "float32"])
  parser.add_argument("--loss", default="cam", choices=list(losses.LOSSES))
  parser.add_argument("--embedding_dim", type=int, default=128)
  parser.add_argument("--num_classes", type=int, default=1000)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--width", type=int,
                      help="ResNet first-stage width (64 in the paper)")
  parser.add_argument("--peak_tflops", type=float,
                      help="peak TFLOP/s per device for the MFU, where"
                      " PEAK_TFLOPS does not know the device")
  parser.add_argument("--depth", type=int,
                      help="ViT depth (blocks), overriding its size's")
  parser.add_argument("--json", help="also write the result here")
  args = parser.parse_args(argv)
  result = measure(
      args.model, image_size=args.image_size, batch=args.batch,
      dtype=args.dtype, loss=args.loss, embedding_dim=args.embedding_dim,
      num_classes=args.num_classes, steps=args.steps, repeats=args.repeats,
      model_kwargs=_model_kwargs(args),
      peak=args.peak_tflops)
  result.update(jax=jax.__version__, host=platform.node())
  mfu = ("n/a (unknown peak)" if result["mfu"] is None
         else f"{100 * result['mfu']:.1f}%")
  flops = result["flops_per_image"]
  print(f"| {args.model} {args.image_size}px {args.dtype} batch {args.batch}"
        f" | {result['devices']} x {result['device_kind']} |"
        f" {result['images_per_second']:,.0f} img/s (median of"
        f" {args.repeats}) | "
        + ("-" if flops is None else f"{flops / 1e9:.3g} GFLOP/img")
        + f" | MFU {mfu} |", flush=True)
  if args.json:
    files.write_json(args.json, result)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
