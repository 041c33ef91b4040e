"""Train a retrieval model, then evaluate it.

  python -m ra_jax.train --config configs/digits.py --workdir /tmp/digits \
      [--config.train.epochs=5]
"""

from absl import flags
from ml_collections import config_flags

from ra_jax import cli
from ra_jax.training import evaluation, runtime
from ra_jax.training.loop import NonFiniteLossError, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "a configs/*.py file")
_WORKDIR = cli.workdir_flag("where checkpoints, metrics and results go;"
                            " rerun to resume")
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  cli.start(config=_CONFIG.value)
  results = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if runtime.is_writer():
    print(evaluation.format_table(results))
    print(f"results written to {_WORKDIR.value}/results.json")


if __name__ == "__main__":
  cli.run(main, errors=(NonFiniteLossError,))
