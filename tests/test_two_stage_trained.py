"""benchmarks/two_stage_trained.py: its searches are the final
evaluation's, so the speed it reports is of the search whose quality the
report shows."""

import json
import os

import numpy as np
import pytest

from benchmarks import two_stage_trained


def test_each_search_finds_what_the_final_evaluation_measured(
    shared_digits_run, tmp_path):
  out = tmp_path / "speed.json"
  two_stage_trained.main([shared_digits_run, "--k", "100", "--lists", "1",
                          "2", "--repeats", "1", "--json", str(out)])
  result = json.load(open(out))["runs"][0]
  final = json.load(open(os.path.join(shared_digits_run, "results.json")))
  assert (result["queries"], result["database"]) == (450, 1347)
  rows = result["searches"]
  assert [(r["class_vectors"], r["lists"]) for r in rows] == [
      (None, None), ("learned", 1), ("learned", 2), ("centroids", 1),
      ("centroids", 2)]
  by_search = {(r["class_vectors"], r["lists"]): r["metrics"]
               for r in final["searches"] if r["list_source"] in
               (None, "labels")}
  # The tiny run evaluates exact search and its learned anchors only.
  assert set(by_search) == {(None, None), ("learned", 1), ("learned", 2)}
  for row in rows[:3]:
    want = by_search[(row["class_vectors"], row["lists"])]
    # Exact search and the evaluation's full ranking compute distances in
    # two ways, so near-equal ones may swap: 1e-6 in this barely trained
    # run. Within the kept lists the two agree exactly.
    tolerance = 1e-5 if row["lists"] is None else 1e-12
    assert row["map@100"] == pytest.approx(want["map@100"], abs=tolerance)
    assert row["precision@100"] == pytest.approx(want["precision@100"],
                                                 abs=tolerance)
  exact, one_list = rows[0], rows[1]
  assert exact["distance_share"] == 1.0 and exact["speed_up"] == 1.0
  learned = [r for r in final["searches"]
             if (r["class_vectors"], r["list_source"], r["lists"]) ==
             ("learned", "labels", 1)][0]
  assert one_list["distance_share"] == pytest.approx(
      learned["distance_fraction"])
  assert one_list["stage_one_accuracy"] == learned["stage_one_accuracy"]
  # Stage 1 by the database's centroids, recomputed here with numpy.
  from ra_jax.trained import TrainedRun
  run = TrainedRun(shared_digits_run)
  query, query_labels = run.embed_split(run.split("query"))
  db, db_labels = run.embed_split(run.split("database"))
  means = np.stack([db[db_labels == c].mean(0) for c in range(10)])
  nearest = np.argmin(((query[:, None] - means[None]) ** 2).sum(-1), 1)
  centroids = rows[3]
  assert centroids["stage_one_accuracy"] == pytest.approx(
      np.mean(nearest == query_labels))
  sizes = np.bincount(db_labels, minlength=10)
  assert centroids["distance_share"] == pytest.approx(
      np.mean(sizes[nearest] + 10) / len(db))
