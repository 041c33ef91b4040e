"""Results reports generated from run directories: `python -m ra_jax.report`.

Reads results.json / metrics.jsonl of every run below a directory (one
run's work dir or any directory of runs), computes the embedding analyses it
needs once per featured run (ra_jax.report.analysis), and writes a Markdown
report with PNG figures. Nothing in it is typed by hand. A study's report
(study/report) builds on the same sections.
"""

from ra_jax.report.build import write_report

__all__ = ["write_report"]
