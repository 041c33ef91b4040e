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


def test_a_results_field_added_since_is_listed_not_counted(
    shared_digits_run, tmp_path):
  rerun = shutil.copytree(shared_digits_run, tmp_path / "rerun",
                          ignore=shutil.ignore_patterns("checkpoints"))
  _edit_json(rerun / "results.json",
             lambda r: r["dataset"].update(a_new_field="abc"))
  assert reproduce.compare_runs(shared_digits_run, str(rerun)) == (
      [], ["results.json/dataset/a_new_field"])


def test_every_attempt_is_kept_with_both_runs_cpus(tmp_path):
  """An attempt is appended, never replacing an earlier one (an entry of
  the format before attempts were kept is read as the first); it names
  whether the rerun ran on the committed run's CPU."""
  def run(name, machine):
    os.makedirs(tmp_path / name)
    (tmp_path / name / "results.json").write_text(json.dumps(
        {"run": {"machine": machine, "versions": {"jax": "0"}}}))
    return str(tmp_path / name)
  zen4 = {"cpu": "AMD EPYC", "cpu_model": "family 25 model 17 stepping 1",
          "isa": ["avx2", "avx512f"]}
  zen3 = {**zen4, "cpu_model": "family 25 model 1 stepping 1",
          "isa": ["avx2"]}
  old = {"cpu": "AMD EPYC", "system": "Linux-fc-v1147"}
  results = tmp_path / "results"
  os.makedirs(results)
  (results / reproduce.RECORD).write_text(json.dumps(
      {"final/a": {"date": "2026-12-01", "reproduces": True}}))
  first = reproduce.record(str(results), "final/a", [], [],
                           run("c1", zen4), run("r1", zen4))
  second = reproduce.record(str(results), "final/a", ["x: 1, rerun 2"], [],
                            run("c2", zen3), run("r2", zen4))
  third = reproduce.record(str(results), "final/a", ["x"], [],
                           run("c3", old), run("r3", zen4))
  assert (first["same_cpu"], second["same_cpu"], third["same_cpu"]) == (
      True, False, None)
  recorded = json.loads((results / reproduce.RECORD).read_text())
  attempts = reproduce.attempts(recorded["final/a"])
  assert [a["date"] for a in attempts][0] == "2026-12-01"
  assert [a["reproduces"] for a in attempts] == [True, True, False, False]
  assert attempts[2]["committed_machine"] == zen3
  assert attempts[2]["machine"] == zen4


def test_cpu_identity_reads_the_model_and_the_vector_flags(tmp_path):
  from ra_jax.training import runtime
  info = tmp_path / "cpuinfo"
  processor = ("processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t:"
               " 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\nstepping\t: 1\n"
               "flags\t\t: fpu sse4_2 avx2 fma avx512f avx512_bf16 bmi2\n")
  info.write_text(processor.format(n=0) + "\n" + processor.format(n=1))
  assert runtime.cpu_identity(str(info)) == {
      "cpu": "AMD EPYC", "cpu_model": "family 25 model 17 stepping 1",
      "isa": ["avx2", "avx512_bf16", "avx512f", "bmi2", "fma", "sse4_2"]}
  missing = runtime.cpu_identity(str(tmp_path / "nothing"))
  assert set(missing) == {"cpu"}


def test_a_rerun_is_pinned_to_as_many_cores_as_the_run_used(monkeypatch):
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
  assert reproduce.pinning({"usable_cores": 1}) == {0}
  assert reproduce.pinning({"usable_cores": 2}) == {0, 1}
  assert reproduce.pinning({"usable_cores": 4}) is None  # every core
  assert reproduce.pinning({"usable_cores": 8}) is None  # more than here
  assert reproduce.pinning({"cpu": "AMD EPYC"}) is None  # not recorded
  assert reproduce.pinning(None) is None


def test_the_same_cpu_needs_the_same_cores_where_both_record_them():
  zen4 = {"cpu_model": "family 25 model 17 stepping 1", "isa": ["avx2"]}
  assert reproduce.same_cpu({**zen4, "usable_cores": 1},
                            {**zen4, "usable_cores": 1})
  assert not reproduce.same_cpu({**zen4, "usable_cores": 1},
                                {**zen4, "usable_cores": 2})
  assert reproduce.same_cpu(zen4, {**zen4, "usable_cores": 2})


def test_results_record_the_usable_cores():
  from ra_jax.training import runtime
  machine = runtime.environment()["machine"]
  assert machine["usable_cores"] == len(os.sched_getaffinity(0))
