"""study/reproduce.py's comparison: what counts as the run reproducing."""

import json
import math
import os
import shutil

from study import reproduce


def _edit_json(path, change):
  with open(path) as f:
    value = json.load(f)
  change(value)
  with open(path, "w") as f:
    json.dump(value, f)


def test_differences_ignore_the_machine_and_name_the_rest():
  a = {"exact": {"map": 0.5, "ks": [1, 10]}, "seconds": 3.0,
       "run": {"wall_seconds": 9}, "nan": math.nan}
  same = {"exact": {"map": 0.5, "ks": [1, 10]}, "seconds": 4.5,
          "run": {"wall_seconds": 1}, "nan": math.nan}
  assert list(reproduce.differences(a, same)) == []
  other = {"exact": {"map": 0.5000001, "ks": [1]}, "nan": math.nan,
           "new": 1}
  assert list(reproduce.differences(a, other)) == [
      "/exact/ks: 2 entries, rerun 1",
      "/exact/map: 0.5, rerun 0.5000001",
      "/new: missing in the committed run"]


def test_a_copy_reproduces_and_each_change_is_named(shared_digits_run,
                                                    tmp_path):
  committed = shared_digits_run
  rerun = shutil.copytree(committed, tmp_path / "rerun",
                          ignore=shutil.ignore_patterns("checkpoints"))
  assert reproduce.compare_runs(committed, str(rerun)) == ([], [])
  # The machine's measures differ on every rerun; a config field added
  # since is listed apart.
  _edit_json(rerun / "results.json",
             lambda r: r.update(train_images_per_second=1.0))
  _edit_json(rerun / "config.json",
             lambda c: c["eval"].update(a_new_field=True))
  assert reproduce.compare_runs(committed, str(rerun)) == (
      [], ["/eval/a_new_field"])
  _edit_json(rerun / "results.json",
             lambda r: r["exact"].update(map=r["exact"]["map"] + 1e-12))
  with open(rerun / "metrics.jsonl", "a") as f:
    f.write(json.dumps({"step": 10 ** 6}) + "\n")
  found, _ = reproduce.compare_runs(committed, str(rerun))
  assert [line.split(":")[0] for line in found] == [
      "results.json/exact/map", "metrics.jsonl/1000000"]
  os.remove(rerun / "results.json")
  assert reproduce.compare_runs(committed, str(rerun))[0] == [
      "results.json: not written by the rerun"]


def test_parameters_compare_byte_for_byte(tmp_path):
  for name in ("committed", "rerun"):
    os.makedirs(tmp_path / name)
    for file, text in (("results.json", "{}"), ("metrics.jsonl", ""),
                       ("config.json", "{}")):
      (tmp_path / name / file).write_text(text)
  (tmp_path / "committed" / "params.msgpack").write_bytes(b"\x01\x02")
  (tmp_path / "rerun" / "params.msgpack").write_bytes(b"\x01\x03")
  assert reproduce.compare_runs(str(tmp_path / "committed"),
                                str(tmp_path / "rerun"))[0] == [
      "params.msgpack: the parameters differ"]


def test_a_resumed_runs_log_is_compared_step_by_step(tmp_path):
  """A run resumed from its checkpoint at step 2 logs steps 3 and 4 again;
  with the same values it is the log of a run never interrupted."""
  def log(name, steps):
    os.makedirs(tmp_path / name)
    for file in ("results.json", "config.json"):
      (tmp_path / name / file).write_text("{}")
    (tmp_path / name / "metrics.jsonl").write_text("".join(
        json.dumps({"step": step, "train/loss": loss,
                    "train/images_per_second": 100.0 + k}) + "\n"
        for k, (step, loss) in enumerate(steps)))
    return str(tmp_path / name)
  straight = log("straight", [(2, 0.5), (3, 0.4), (4, 0.3), (5, 0.2)])
  resumed = log("resumed", [(2, 0.5), (3, 0.4), (4, 0.3), (3, 0.4),
                            (4, 0.3), (5, 0.2)])
  assert reproduce.compare_runs(straight, resumed) == ([], [])
  assert reproduce.compare_runs(resumed, straight) == ([], [])
  changed = log("changed", [(2, 0.5), (3, 0.4), (4, 0.3), (3, 0.4),
                            (4, 0.31), (5, 0.2)])
  found, _ = reproduce.compare_runs(straight, changed)
  assert found == ["metrics.jsonl/4: {'step': 4, 'train/loss': 0.3},"
                   " rerun [{'step': 4, 'train/loss': 0.3}, {'step': 4,"
                   " 'train/loss': 0.31}]"]
