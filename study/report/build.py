"""The study's reports: one per setting (study/settings.py) whose results
hold a protocol.json — the answer up front, the protocol and its
validation stages, each final group with its significance, targets and
two-stage search, the ablation and the diagnosis, then the figures — and
the verdict across settings at the top of the first setting's report
(docs/RESULTS.md). Generic sections from `ra_jax.report`, study sections
from this package, everything read from the run files and each setting's
protocol.json."""

import collections
import dataclasses
import os
from typing import Optional

from ra_jax import files
from ra_jax.report import build
from ra_jax.report import comparison
from ra_jax.report import runs as runs_lib
from study import rules
from study import settings as settings_lib
from study.report import across, budget, diagnostics, validation, verdicts

COMMAND = "python -m study.report"
# Where each setting's report goes: the first setting's is docs/RESULTS.md.
REPORTS = {name: "docs/RESULTS.md" if k == 0 else f"docs/RESULTS_{name}.md"
           for k, name in enumerate(settings_lib.SETTINGS)}


@dataclasses.dataclass
class StudyReport:
  lines: list[str]
  verdicts: list[across.GroupVerdict]
  status: str  # what has run, for a setting without final groups


def write_study_report(root: str, output: str, *, analyze: bool = True
                       ) -> str:
  """One setting's report, from the runs under `root`."""
  report = study_report(root, output, analyze=analyze)
  files.write_text(output, "\n".join(report.lines) + "\n")
  return output


def write_all(*, analyze: bool = True,
              reports: Optional[dict[str, tuple[str, str]]] = None
              ) -> list[str]:
  """Every setting's report whose results hold a protocol.json and a
  finished run (`reports`: setting name -> (results directory, output),
  default each setting's results and REPORTS), the first one's with the
  verdict across settings after its header; returns the outputs written.
  A setting whose first run is still training has nothing to report."""
  if reports is None:
    reports = {name: (setting.results, REPORTS[name])
               for name, setting in settings_lib.SETTINGS.items()}
  first_output = next(iter(reports.values()))[1]
  written, rows, first = [], [], None
  for name, (root, output) in reports.items():
    if not (files.exists(files.join(root, "protocol.json"))
            and runs_lib.find_runs(root)):
      continue
    report = study_report(root, output, analyze=analyze, command=COMMAND)
    link = "" if output == first_output else os.path.relpath(
        output, os.path.dirname(first_output) or ".")
    rows.append((settings_lib.SETTINGS[name].title, link, report.status,
                 report.verdicts))
    if first is None:
      first = (output, report)
    else:
      files.write_text(output, "\n".join(report.lines) + "\n")
      written.append(output)
  if first is None:
    raise FileNotFoundError("no setting's results hold a protocol.json"
                            " (python -m study.grid writes it)")
  output, report = first
  # after the header: before the answer, or the first section after it
  answer = next((k for k, line in enumerate(report.lines)
                 if k > 0 and line.startswith("## ")), len(report.lines))
  lines = (report.lines[:answer] + across.across_section(
      rows, settings_lib.FOCUS) + report.lines[answer:])
  files.write_text(output, "\n".join(lines) + "\n")
  return [output] + written


def _status(staged, protocol: dict) -> str:
  """What a setting has run so far, for the table across settings: each
  stage's finished runs in the protocol's order, out of the tuning's
  planned trials (the later stages' counts depend on what the earlier ones
  select), and the final length once the length stage has chosen it."""
  done = collections.Counter(run.stage for run in staged)
  if not done:
    return "not started"
  planned = {"tuning": validation.planned_tuning_runs(protocol)}
  chosen = validation.final_length(staged, protocol)
  notes = {"length": f" ({chosen[0]} epochs chosen"
                    f"{'' if chosen[2] else ', not converged'})"
           } if chosen else {}
  order = list(protocol["stages"])
  return "selection under way: " + ", ".join(
      f"{stage} {done[stage]}"
      f"{f' of {planned[stage]}' if planned.get(stage) else ''} runs"
      f"{notes.get(stage, '')}"
      for stage in sorted(done, key=lambda s: (
          order.index(s) if s in order else len(order), s)))


def study_report(root: str, output: str, *, analyze: bool = True,
                 command: str = "") -> StudyReport:
  """The report's lines, its final groups' verdicts and its status;
  `command`: how to regenerate it (default: this report alone)."""
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
  if not runs:
    status = _status(diverged, protocol)
    return StudyReport([f"# Results: {protocol.get('title', root)}", "",
                        f"No run under {root} has finished yet ({status}).",
                        ""], [], status)
  lines = build.header(root, runs, command or f"{COMMAND} --results {root}")
  # Bootstraps over queries, once per final group: the answer up front and
  # the group's own section show the same tests.
  tests = {group: comparison.paired_tests(runs, group, focus)
           for group in summaries if group.startswith("final/")}
  # The verdicts (the answer, the table across settings) on the seeds every
  # loss of a final group has; the group sections show every seed.
  common = comparison.on_common_seeds(runs)
  common_summaries = runs_lib.summarise(common)
  common_tests = tests if len(common) == len(runs) else {
      group: comparison.paired_tests(common, group, focus) for group in tests}
  lines += verdicts.answer_section(runs, summaries, protocol, common_tests)
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
    lines += build.group_table(group, rows, focus,
                               judged=common_summaries.get(group, []))
    lines += comparison.final_significance(runs, group, focus,
                                           tests.get(group))
    lines += verdicts.targets_section(runs, protocol, group)
    lines += comparison.two_stage_section(runs, group, focus)
    lines += comparison.two_stage_comparison(runs, group)
  lines += budget.variant_finals_section(staged, protocol)
  lines += diagnostics.reproduction_section(root)
  lines += diagnostics.ablation_section(staged, protocol)
  lines += diagnostics.diagnosis_section(root, staged)
  primary, featured = _featured(runs)
  lines += build.figures_section(
      primary, featured, figure_dir, rel, analyze=analyze, focus=focus,
      seeds_text=not primary.startswith("tuning"))
  return StudyReport(lines,
                     across.setting_verdicts(common, protocol, common_tests),
                     _status(staged + diverged, protocol))


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
