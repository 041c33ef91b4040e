"""python -m study.report [--results results/grid] [--output docs/RESULTS.md]
    [--no-analyze]

The study's report from its committed result files; figures go next to the
report, in <output stem>_figures/.
"""

import argparse
import sys


def main() -> int:
  parser = argparse.ArgumentParser(prog="python -m study.report",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--results", default="results/grid")
  parser.add_argument("--output", default="docs/RESULTS.md")
  parser.add_argument("--no-analyze", action="store_true",
                      help="leave out the figures that need checkpoints")
  args = parser.parse_args()
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  from ra_jax import cli
  from study.report import build
  return cli.report_errors(
      lambda: build.write_study_report(args.results, args.output,
                                       analyze=not args.no_analyze),
      f"report written to {args.output}")


if __name__ == "__main__":
  sys.exit(main())
