"""Re-run the final evaluation of a trained work dir from its latest
checkpoint, without training.

  python -m ra_jax.evaluate --workdir /tmp/digits [--config configs/digits.py]
      [--config.eval.two_stage_lists=1,2,3]

The config defaults to the work dir's own config.json; a given --config must
match it in dataset, model and loss. Results go to
`workdir/evaluation/step_<N>.json` (results.json of the training run is left
as it is).
"""

from absl import flags
from absl import logging
from ml_collections import config_flags

from ra_jax import cli
from ra_jax.training import evaluation, experiment, runtime, trained

_CONFIG = config_flags.DEFINE_config_file("config", None,
                                          "a configs/*.py file (optional)")
_WORKDIR = flags.DEFINE_string("workdir", None, "a trained run's work dir")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value or experiment.config_of(_WORKDIR.value)
  runtime.initialize(config.get("distributed", "auto"))
  step, results = trained.evaluate_workdir(_WORKDIR.value, _CONFIG.value)
  print(f"checkpoint step {step}")
  print(evaluation.format_table(results))
  print(f"results written to {_WORKDIR.value}/evaluation/step_{step}.json")


if __name__ == "__main__":
  cli.run(main)
