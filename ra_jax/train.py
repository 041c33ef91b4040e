"""Train a retrieval model, then evaluate it.

  python -m ra_jax.train --config configs/digits.py --workdir /tmp/digits \
      [--config.train.epochs=5]
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from ra_jax.training.loop import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "a configs/*.py file")
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics"
                               " and results go; rerun to resume")
flags.mark_flags_as_required(["config", "workdir"])


def print_table(results) -> None:
  """The README's results table: exact and two-stage rows."""
  exact = results["exact"]
  ks = sorted(int(k.split("@")[1]) for k in exact if k.startswith("precision@"))
  header = ["search", "mAP"] + [f"mAP@{k}" for k in ks] + [
      f"P@{k}" for k in ks]
  rows = [["exact", f"{exact['map']:.4f}"] +
          [f"{exact[f'map@{k}']:.4f}" for k in ks] +
          [f"{exact[f'precision@{k}']:.4f}" for k in ks]]
  for name, value in results.items():
    if name.startswith("two_stage_"):
      rows.append([f"two-stage, {name.split('_')[-1]} list(s)", "-"] +
                  [f"{value[f'map@{k}']:.4f}" for k in ks] +
                  [f"{value[f'precision@{k}']:.4f}" for k in ks])
  widths = [max(len(r[i]) for r in [header] + rows) for i in
            range(len(header))]
  for row in [header] + rows:
    print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
  if "nearest_anchor_accuracy" in results:
    print(f"nearest-anchor accuracy: {results['nearest_anchor_accuracy']:.4f}")
  if "train_images_per_second" in results:
    print(f"training: {results['train_images_per_second']:.0f} images/s")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  results = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print_table(results)
  print(f"results written to {_WORKDIR.value}/results.json")


if __name__ == "__main__":
  app.run(main)
