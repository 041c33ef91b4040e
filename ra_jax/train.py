"""Train a retrieval model, then evaluate it.

  python -m ra_jax.train --config configs/digits.py --workdir /tmp/digits \
      [--config.train.epochs=5]

Running the same command again resumes from the newest checkpoint. On
SIGTERM (a preemption notice, `launch/tpu_pod.sh stop`, SLURM's scancel)
every process saves a checkpoint at its current step and the command exits
with status 143 and one line saying so.
"""

import sys

from absl import flags
from ml_collections import config_flags

from ra_jax import cli
from ra_jax.training import evaluation, runtime
from ra_jax.training.loop import NonFiniteLossError, train_and_evaluate
from ra_jax.training.preemption import Preempted

# 128 + SIGTERM: the shell's status of a process that SIGTERM ended, here
# after its checkpoint is saved, so that wrappers see an unfinished run.
PREEMPTED_STATUS = 143

_CONFIG = config_flags.DEFINE_config_file("config", None, "a configs/*.py file")
_WORKDIR = cli.workdir_flag("where checkpoints, metrics and results go;"
                            " rerun to resume")
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  cli.start(config=_CONFIG.value)
  try:
    results = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except Preempted as stopped:
    if runtime.is_writer():
      print(f"ra_jax.train: {stopped}", file=sys.stderr, flush=True)
    sys.exit(PREEMPTED_STATUS)
  if runtime.is_writer():
    print(evaluation.format_table(results))
    print(f"results written to {_WORKDIR.value}/results.json")


if __name__ == "__main__":
  cli.run(main, errors=(NonFiniteLossError,))
