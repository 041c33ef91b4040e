"""The study's report: `python -m study.report --results results/grid
--output docs/RESULTS.md`."""
