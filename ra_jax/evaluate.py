"""Re-run the final evaluation of a trained work dir from its latest
checkpoint, without training.

  python -m ra_jax.evaluate --workdir /tmp/digits [--config configs/digits.py]
      [--config.eval.two_stage_lists=1,2,3]

The config defaults to the work dir's own config.json; a given --config must
match it in dataset, model and loss. Results go to
`workdir/evaluation/step_<N>.json` (results.json of the training run is left
as it is).
"""

from ml_collections import config_flags

from ra_jax import cli
from ra_jax.trained import evaluate_workdir
from ra_jax.training import evaluation
from ra_jax.training import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file("config", None,
                                          "a configs/*.py file (optional)")
_WORKDIR = cli.workdir_flag()


def main(argv):
  del argv
  cli.start(_WORKDIR.value, _CONFIG.value)
  step, results = evaluate_workdir(_WORKDIR.value, _CONFIG.value)
  print(f"checkpoint step {step}")
  print(evaluation.format_table(results))
  print(f"results written to"
        f" {workdir_lib.evaluation_path(_WORKDIR.value, step)}")


if __name__ == "__main__":
  cli.run(main)
