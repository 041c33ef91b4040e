"""The report: its numbers come from the run files, its curves from the
embeddings, and it works on any work dir."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import digits
from ra_jax.report import analysis
from ra_jax.report import build
from ra_jax.report import runs as runs_lib
from ra_jax.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_precision_recall_on_a_known_ranking():
  # One query of class 0 at the origin; database distances 1..6 with
  # classes 0,1,0,1,1,0: relevant at ranks 1, 3, 6 -> precision 1, 2/3, 1/2.
  db = np.arange(1, 7, dtype=np.float32)[:, None]
  curve = analysis.precision_recall(np.zeros((1, 1), np.float32),
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


def _record(label, seed, value):
  return runs_lib.RunRecord("w", "g/full", label, seed, {}, {
      "exact": {"map": value, "map@100": value, "precision@10": value,
                "precision@100": value}})


def test_summary_and_verdict_say_who_wins():
  rows = runs_lib.summarise([_record("cam", 0, 0.8), _record("cam", 1, 0.82),
                             _record("ce", 0, 0.7), _record("ce", 1, 0.74)])
  cam = next(r for r in rows["g/full"] if r.label == "cam")
  assert cam.mean["map"] == pytest.approx(0.81)
  assert cam.std["map"] == pytest.approx(np.std([0.8, 0.82], ddof=1))
  assert "has the best mean mAP (0.8100), +0.0900 over the best baseline, ce" \
      in runs_lib.verdict(rows["g/full"])
  rows = runs_lib.summarise([_record("cam", 0, 0.6), _record("ce", 0, 0.7),
                             _record("triplet", 0, 0.65)])
  assert ("does not win here: ce has the best mean mAP (0.7000), the class"
          " anchor margin loss is ranked 3 of 3") in runs_lib.verdict(
              rows["g/full"])


def test_tuning_table_compares_each_loss_at_its_best_setting():
  def run(group, label, value):
    record = _record(label, 0, value)
    record.group = group
    return record
  runs = [run("f/full", "cam", 0.50), run("f/full", "ce", 0.55),
          run("f/tuning", "cam@lr=0.1", 0.62), run("f/tuning", "ce@lr=0.1",
                                                    0.58)]
  lines = build._tuning_table(runs, runs_lib.summarise(runs))
  text = "\n".join(lines)
  assert "| cam | 0.5000 | 0.6200 | 0.6200 (lr=0.1) |" in text
  assert "| ce | 0.5500 | 0.5800 | 0.5800 (lr=0.1) |" in text
  assert ("the class anchor margin loss is best: 0.6200 (lr=0.1), +0.0400"
          " over ce (0.5800)") in text
  runs.append(run("f/tuning", "ce@emb=128", 0.70))
  text = "\n".join(build._tuning_table(runs, runs_lib.summarise(runs)))
  assert "does not win: ce is best with 0.7000 (emb=128)" in text
  assert "ranked 2 of 2 with 0.6200 (lr=0.1, -0.0800)" in text
  assert "Not every loss has every setting yet: cam 2, ce 3 runs." in text
  runs.append(run("f/knobs", "margin=2", 0.66))
  text = "\n".join(build._knob_table(runs, runs_lib.summarise(runs)))
  assert ("The best setting, margin=2 (0.6600), does not reach the best"
          " baseline run with any setting, ce@emb=128 (0.7000, -0.0400)."
          " The 1 knob run(s)") in text


def test_report_of_two_digits_runs(tmp_path):
  for loss in ("cam", "ce"):
    config = digits.get_config(f"size=tiny,loss={loss}")
    config.train.steps = 4
    config.eval.every = 2
    config.eval.two_stage_lists = (1, 2)
    loop.train_and_evaluate(config, str(tmp_path / "runs" / loss))
  out = subprocess.run(
      [sys.executable, "-m", "ra_jax.report", "--workdir",
       str(tmp_path / "runs"), "--output", str(tmp_path / "RESULTS.md")],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=ROOT))
  assert out.returncode == 0, out.stderr[-3000:]
  report = (tmp_path / "RESULTS.md").read_text()
  cam = json.load(open(tmp_path / "runs" / "cam" / "results.json"))
  assert "## digits/full" in report
  assert f"{cam['exact']['map']:.4f}" in report  # numbers from the files
  assert "class anchor margin loss" in report  # the verdict sentence
  assert "## Two-stage vs exact search" in report
  assert "| two-stage | 2 | anchors |" in report
  for name in ("training_curves", "precision_recall", "projection",
               "example_queries"):
    assert (tmp_path / "RESULTS_figures" / f"{name}.png").stat().st_size > 0
    assert f"RESULTS_figures/{name}.png" in report
  analysed = json.load(open(tmp_path / "runs" / "cam" / "analysis.json"))
  exact = analysed["search"][0]
  # a subprocess on 1 device: ties of the barely trained model may reorder
  assert exact["map@100"] == pytest.approx(cam["exact"]["map@100"], abs=1e-3)
  assert len(analysed["precision_recall"]) == 11
  assert "AMD" in report or "Hardware" in report

  empty = subprocess.run(
      [sys.executable, "-m", "ra_jax.report", "--workdir",
       str(tmp_path / "nothing")], cwd=ROOT, capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=ROOT))
  assert empty.returncode != 0 and "no finished run" in empty.stderr
