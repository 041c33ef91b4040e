"""The study's report (docs/RESULTS.md): the answer up front, the protocol
and its validation stages, each final group with its significance, targets
and two-stage search, the ablation and the diagnosis, then the figures —
generic sections from `ra_jax.report`, study sections from this package,
everything read from the run files and the study's protocol.json."""

from ra_jax import files
from ra_jax.report import build
from ra_jax.report import comparison
from ra_jax.report import runs as runs_lib
from study import rules
from study.report import budget, diagnostics, validation, verdicts

COMMAND = "python -m study.report"


def write_study_report(root: str, output: str, *, analyze: bool = True
                       ) -> str:
  # A diverged selection run has no metrics: the tuning section counts
  # it, no other section sees it.
  found = build.find(root)
  diverged = [r for r in found if rules.DIVERGED in r.results]
  runs = [r for r in found if rules.DIVERGED not in r.results]
  protocol = validation.read_protocol(root)
  focus = protocol["focus"]
  summaries = runs_lib.summarise(runs)
  figure_dir, rel = build.figure_paths(output)
  staged = [r for r in runs if r.stage]
  lines = build.header(root, runs, f"{COMMAND} --results {root}")
  # Bootstraps over queries, once per final group: the answer up front and
  # the group's own section show the same tests.
  tests = {group: comparison.paired_tests(runs, group, focus)
           for group in summaries if group.startswith("final/")}
  lines += verdicts.answer_section(runs, summaries, protocol, tests)
  lines += validation.protocol_section(protocol)
  lines += budget.budget_section(staged + diverged, protocol)
  lines += validation.missing_stages(staged, protocol)
  lines += validation.tuning_section(staged, protocol, diverged)
  lines += validation.variants_section(staged, protocol)
  lines += validation.length_section(staged, protocol, figure_dir, rel)
  for group, rows in summaries.items():
    if any(r.group == group and r.stage not in (None, "final")
           for r in runs):
      continue  # tuning, variants, length, ablation: sections of their own
    lines += build.group_table(group, rows, focus)
    lines += comparison.final_significance(runs, group, focus,
                                           tests.get(group))
    lines += verdicts.targets_section(runs, protocol, group)
    lines += comparison.two_stage_section(runs, group, focus)
    lines += comparison.two_stage_comparison(runs, group)
  lines += budget.variant_finals_section(staged, protocol)
  lines += diagnostics.ablation_section(staged, protocol)
  lines += diagnostics.diagnosis_section(root, staged)
  primary, featured = _featured(runs)
  lines += build.figures_section(
      primary, featured, figure_dir, rel, analyze=analyze, focus=focus,
      seeds_text=not primary.startswith("tuning"))
  files.write_text(output, "\n".join(lines) + "\n")
  return output


def _featured(runs) -> tuple[str, list[runs_lib.RunRecord]]:
  """The group the figures show and one run per loss of it: the final
  full-set runs (lowest seed), or before they exist the best tuning trial
  of each loss."""
  if any(r.group == "final/full" for r in runs):
    return "final/full", build.featured_runs(runs, "final/full")
  best = {}
  for run in runs:
    if run.stage == "tuning" and (
        run.loss not in best or
        runs_lib.exact_value(run) > runs_lib.exact_value(best[run.loss])):
      best[run.loss] = run
  return "tuning (best trial of each loss)", list(best.values())
