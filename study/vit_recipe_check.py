"""Does the ViT recipe (configs/validated.py, FAMILY_OPTIM["vit"]) train
with every loss? Its committed results (results/vit_recipe_check/) checked
the sizing recipe (VIT_SIZING: AdamW 1e-3, clipping 1.0) before the ViT's
own selection replaced it for the losses that selection searched.
ViT-Ti/7 with 6 blocks on Fashion-MNIST, each loss with
its own hyperparameters and class-parameter multiplier, trained past the
end of the learning-rate warm-up (where the ResNet's SGD recipe diverged)
on the validation hold-out, then scored on it (mAP@100 of 1,000 queries
against 10,000 database images, the subset evaluation).

A check that the recipe does not diverge, not a selection: one run per
loss, 300 steps (1.5 epochs of the 50,000 training images).

  python -m study.vit_recipe_check [--steps 300] [--out results/vit_recipe_check]

Resumable: a loss whose result file exists is skipped; a loss's
interrupted run resumes from its checkpoint.
"""

import argparse
import json
import math
import os
import time

from configs import common, fashion_mnist
from ra_jax import files, losses
from ra_jax.training import loop
from study import settings


def check(loss: str, steps: int, workdir: str) -> dict:
  config = fashion_mnist.get_config(f"model=vit_ti7,loss={loss}")
  common.set_fields(config, {
      "model.depth": 6, "train.epochs": 0, "train.steps": steps,
      "eval.every": steps, "train.checkpoint_every": 100,
      **settings.VALIDATION})  # the grid's hold-out
  start = time.time()
  try:
    loop.train(config, workdir)
    error = None
  except loop.NonFiniteLossError as e:
    error = str(e)
  metrics = [json.loads(line) for line in files.read_text(
      os.path.join(workdir, "metrics.jsonl")).splitlines() if line]
  losses_seen = [m["train/loss"] for m in metrics if "train/loss" in m]
  evals = [m for m in metrics if "eval/map" in m]
  return {"loss": loss, "steps": steps, "optim": config.optim.to_dict(),
          "model": {"name": config.model.name, "depth": config.model.depth},
          "diverged": error is not None, "error": error,
          "last_logged_loss": losses_seen[-1] if losses_seen else None,
          "finite": all(math.isfinite(v) for v in losses_seen),
          "subset_eval": evals[-1] if evals else None,
          "wall_seconds": time.time() - start}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--out", default="results/vit_recipe_check")
  parser.add_argument("--workdirs", default="runs/vit_recipe_check")
  args = parser.parse_args()
  for loss in losses.LOSSES:
    path = os.path.join(args.out, f"{loss}.json")
    if files.exists(path):
      continue
    result = check(loss, args.steps, os.path.join(args.workdirs, loss))
    files.write_json(path, result)
    print(loss, "diverged" if result["diverged"] else "trained",
          result["subset_eval"], flush=True)


if __name__ == "__main__":
  main()
