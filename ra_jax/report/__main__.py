"""python -m ra_jax.report --workdir DIR [--output DIR/RESULTS.md]
    [--focus LOSS] [--no-analyze]

DIR is one run's work dir or a directory of runs. Figures go next to the
report, in <output stem>_figures/.
"""

import argparse
import sys


def main() -> int:
  parser = argparse.ArgumentParser(
      prog="python -m ra_jax.report",
      description="Write a Markdown results report with figures for the"
                  " runs under --workdir.")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--output", help="default: <workdir>/RESULTS.md")
  parser.add_argument("--focus", help="the loss (registry name) the"
                      " verdicts compare with the others; default: the one"
                      " DIR/protocol.json names, else cam")
  parser.add_argument("--no-analyze", action="store_true",
                      help="do not embed data for the two-stage table and"
                           " figures that need embeddings")
  args = parser.parse_args()
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  from ra_jax import cli, files
  from ra_jax.report import build
  output = args.output or files.join(args.workdir, "RESULTS.md")
  return cli.report_errors(
      lambda: build.write_report(args.workdir, output,
                                 analyze=not args.no_analyze,
                                 focus=args.focus),
      f"report written to {output}")


if __name__ == "__main__":
  sys.exit(main())
