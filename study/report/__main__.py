"""python -m study.report [--results results/grid --output docs/RESULTS.md]
    [--no-analyze]

The study's reports from its committed result files: without --results,
one per setting that has results (docs/RESULTS.md for Fashion-MNIST with
the ResNet, with the verdict across settings; docs/RESULTS_<setting>.md for
the others); with --results, that directory's alone (to --output). Figures
go next to each report, in <output stem>_figures/.
"""

import argparse
import sys


def main() -> int:
  parser = argparse.ArgumentParser(prog="python -m study.report",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--results", help="one setting's results directory")
  parser.add_argument("--output", default="docs/RESULTS.md",
                      help="with --results: where its report goes")
  parser.add_argument("--no-analyze", action="store_true",
                      help="leave out the figures that need checkpoints")
  args = parser.parse_args()
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  from ra_jax import cli
  from study.report import build
  analyze = not args.no_analyze
  if args.results:
    return cli.report_errors(
        lambda: build.write_study_report(args.results, args.output,
                                         analyze=analyze),
        f"report written to {args.output}")
  return cli.report_errors(
      lambda: print("\n".join(build.write_all(analyze=analyze))),
      "reports written (the first holds the verdict across settings)")


if __name__ == "__main__":
  sys.exit(main())
