"""The report: its numbers come from the run files, its curves from the
embeddings, and it works on any work dir."""

import json
import os

import numpy as np
import pytest

from ra_jax import retrieval
from ra_jax.report import analysis
from ra_jax.report import build
from ra_jax.report import runs as runs_lib
from ra_jax.training import loop
from tests import runs as test_runs


def test_precision_recall_on_a_known_ranking():
  # One query of class 0 at the origin; database distances 1..6 with
  # classes 0,1,0,1,1,0: relevant at ranks 1, 3, 6 -> precision 1, 2/3, 1/2.
  db = np.arange(1, 7, dtype=np.float32)[:, None]
  curve = retrieval.precision_recall(np.zeros((1, 1), np.float32),
                                     np.array([0]), db,
                                     np.array([0, 1, 0, 1, 1, 0]))
  # interpolated: max precision at recall >= r
  want = [1.0] * 4 + [2 / 3] * 3 + [0.5] * 4  # r = 0..0.3, 0.4..0.6, 0.7..1
  np.testing.assert_allclose(curve, want)


def test_projection_keeps_anchors_in_the_same_space():
  rng = np.random.default_rng(0)
  points = rng.normal(size=(50, 5))
  projected, anchors = analysis.project(points, points[:3])
  np.testing.assert_allclose(anchors, projected[:3])


def _record(loss, seed, value, group="g/full", variant=None):
  name = runs_lib.loss_name({"name": loss})
  return runs_lib.RunRecord(
      "w", group, name + (f" [{variant}]" if variant else ""), seed, {}, {
          "exact": {"map": value, "map@100": value, "precision@10": value,
                    "precision@100": value}}, loss=loss, name=name,
      variant=variant)


def test_summary_and_verdict_say_who_wins():
  rows = runs_lib.summarise([_record("cam", 0, 0.8), _record("cam", 1, 0.82),
                             _record("ce", 0, 0.7), _record("ce", 1, 0.74)])
  cam = next(r for r in rows["g/full"] if r.loss == "cam")
  assert cam.label == "class anchor margin"
  assert cam.mean["map"] == pytest.approx(0.81)
  assert cam.std["map"] == pytest.approx(np.std([0.8, 0.82], ddof=1))
  assert ("has the best mean mAP (0.8100), +0.0900 over the best baseline,"
          " cross-entropy") in runs_lib.verdict(rows["g/full"], "cam")
  assert runs_lib.verdict(rows["g/full"], "triplet") is None  # not in it
  assert runs_lib.verdict(rows["g/full"], "ce").startswith(
      "The cross-entropy loss does not win here: class anchor margin")
  rows = runs_lib.summarise([_record("cam", 0, 0.6), _record("ce", 0, 0.7),
                             _record("triplet", 0, 0.65)])
  assert ("does not win here: cross-entropy has the best mean mAP (0.7000),"
          " the class anchor margin loss is ranked 3 of 3") in (
              runs_lib.verdict(rows["g/full"], "cam"))


@pytest.mark.slow
def test_report_of_two_digits_runs(digits_run, tmp_path):
  runs_dir = tmp_path / "runs"
  runs_dir.mkdir()
  os.rename(digits_run, runs_dir / "cam")
  loop.train_and_evaluate(test_runs.tiny_config("ce"), str(runs_dir / "ce"))
  build.write_report(str(runs_dir), str(tmp_path / "RESULTS.md"))
  report = (tmp_path / "RESULTS.md").read_text()
  cam = json.load(open(runs_dir / "cam" / "results.json"))
  ce = json.load(open(runs_dir / "ce" / "results.json"))
  assert "## digits/full" in report
  # numbers from the files, under the losses' full names
  # the configs' validated margins differ from the library's defaults
  for name, results in (("class anchor margin (margin=6.46, min_norm=2.2)",
                         cam), ("cross-entropy", ce)):
    value = f"{results['exact']['map']:.4f}"
    assert (f"| {name} | 1 | {value} |" in report or
            f"| {name} | 1 | **{value}** |" in report)  # bold: the best
  assert "class anchor margin loss" in report  # the verdict sentence
  assert ("## Two-stage vs exact search (digits/full, class anchor margin"
          " (margin=6.46, min_norm=2.2))") in report
  assert "| two-stage | 2 | labels |" in report
  # the group's own two-stage table, from the run's search rows
  assert "### Two-stage search (digits/full, class anchor margin)" in report
  two = retrieval.find_row(cam["searches"], "two_stage", "labels", 2)
  assert (f"| label | 2 | {two['metrics']['map']:.4f} |"
          f" {two['metrics']['precision@10']:.4f} |") in report
  for name in ("training_curves", "precision_recall", "projection",
               "example_queries"):
    assert (tmp_path / "RESULTS_figures" / f"{name}.png").stat().st_size > 0
    assert f"RESULTS_figures/{name}.png" in report
  analysed = json.load(open(runs_dir / "cam" / "analysis.json"))
  assert len(analysed["precision_recall"]) == 11
  assert analysed["num_queries"] == cam["exact"]["num_queries"]
  # the two-stage vs exact table is the run's own rows
  exact = retrieval.find_row(cam["searches"], "exact", None, None)
  assert f"| exact | all | - | {exact['metrics']['map']:.4f} |" in report
  machine = cam["run"]["machine"]
  assert (f"- Hardware: {machine['cpu']}, {machine['cpu_count']} cores"
          in report)
  cores = machine["usable_cores"]
  assert f"; each run on {cores} core{'s' if cores > 1 else ''} (" in report



def test_labels_name_the_model_only_where_a_group_mixes_models():
  def record(group, loss, model):
    return runs_lib.RunRecord(f"/{group}/{loss}/{model}", group, loss, 0,
                              {"model": {"name": model}}, {})
  mixed = [record("a", "cross-entropy", "mlp"),
           record("a", "class anchor margin", "resnet18_cifar"),
           record("b", "cross-entropy", "mlp"),
           record("b", "class anchor margin", "mlp")]
  runs_lib._name_models(mixed)
  assert [r.label for r in mixed] == [
      "cross-entropy (mlp)", "class anchor margin (resnet18_cifar)",
      "cross-entropy", "class anchor margin"]


@pytest.mark.slow
def test_report_cli_writes_a_report_or_says_why_not(shared_digits_run,
                                                    tmp_path):
  empty = test_runs.cli("ra_jax.report", "--workdir",
                        str(tmp_path / "nothing"))
  assert empty.returncode == 2 and "no finished run" in empty.stderr
  out = test_runs.cli("ra_jax.report", "--workdir", shared_digits_run,
                      "--output", str(tmp_path / "R.md"), "--no-analyze")
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"report written to {tmp_path / 'R.md'}" in out.stdout
  assert "| class anchor margin (margin=6.46, min_norm=2.2) | 1 |" in (
      tmp_path / "R.md").read_text()
