"""Retrain committed runs from scratch and compare them with what is
committed (issue 29: the final runs should reproduce to the printed digits
on the same kind of machine).

  python -m study.reproduce [--setting fashion_mnist] PATH [PATH ...]

PATH: a run under the setting's results, e.g. final/10-shot/cam/seed0. Each
is retrained in a scratch copy of the results with that run left out, so
the grid plans it again from the same committed selection, with the same
settings (`python -m study.grid --only PATH`). Then, against the
committed run:
- params.msgpack: byte for byte;
- results.json and metrics.jsonl: every value, apart from what measures
  the machine rather than the run (images/s, wall seconds, the `run`
  record: versions, machine, whether it resumed); the log step by step
  (a resumed run logs again, with the same values, the steps it took
  after its last checkpoint);
- config.json: every field the committed run recorded (fields added to
  the configs since are listed, not counted as differences; so are
  results.json fields added since).
Exit status 0 when every run reproduces, 1 otherwise, naming each
difference and keeping the rerun to look into. Every attempt is recorded
in the setting's results, in reproduced.json (path -> attempts: date,
outcome, differences, versions, the CPU of the rerun and of the committed
run), which the report shows; nothing else under results/ is written.

Runs are bit-identical on one CPU model with the same number of usable
cores (XLA's CPU thread count follows the process's affinity, and a
stage run with `study.grid --workers 2` pins each run to one core; the
rerun is pinned to as many cores as the committed run recorded). On
another model or instruction
set (this project's machines of one kind have come as more than one AMD
EPYC generation) XLA generates other code, float rounding differs, and
training drifts within tens of steps: a rerun there compares as another
sample of the same seed, not to the bit.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator, Optional, Sequence

from ra_jax import files
from study import settings as settings_lib

RECORD = "reproduced.json"

# What measures the machine or the session, not the run.
VOLATILE = frozenset({"train_images_per_second", "train/images_per_second",
                      "seconds", "run"})


def differences(committed: Any, rerun: Any, where: str = ""
                ) -> Iterator[str]:
  """Where two JSON values differ, VOLATILE keys aside; floats compare
  exactly (the same machine kind gives the same bits)."""
  if isinstance(committed, dict) and isinstance(rerun, dict):
    for key in sorted(set(committed) | set(rerun)):
      if key in VOLATILE:
        continue
      if key not in rerun or key not in committed:
        side = "rerun" if key not in rerun else "committed run"
        yield f"{where}/{key}: missing in the {side}"
      else:
        yield from differences(committed[key], rerun[key], f"{where}/{key}")
  elif isinstance(committed, list) and isinstance(rerun, list):
    if len(committed) != len(rerun):
      yield f"{where}: {len(committed)} entries, rerun {len(rerun)}"
    for i, (a, b) in enumerate(zip(committed, rerun)):
      yield from differences(a, b, f"{where}[{i}]")
  elif committed != rerun and not (committed != committed and
                                   rerun != rerun):  # NaN == NaN here
    yield f"{where}: {committed!r}, rerun {rerun!r}"


def _jsonl(path: str) -> list:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _by_step(path: str) -> dict[str, Any]:
  """A training log as step -> its entry. A run resumed from a checkpoint
  logs again the steps it had logged after that checkpoint; equal entries
  of one step count once, different ones are all kept (a difference)."""
  steps: dict[str, list] = {}
  for entry in _jsonl(path):
    entry = {k: v for k, v in entry.items() if k not in VOLATILE}
    entries = steps.setdefault(str(entry.get("step")), [])
    if entry not in entries:
      entries.append(entry)
  return {step: entries[0] if len(entries) == 1 else entries
          for step, entries in steps.items()}


_ADDED = "missing in the committed run"


def compare_runs(committed: str, rerun: str) -> tuple[list[str], list[str]]:
  """(differences, fields the rerun has and the committed run does not:
  config fields as "/eval/index_storage", results fields as
  "results.json/dataset/fingerprint") between two finished runs'
  folders."""
  found = []
  for name in ("params.msgpack", "results.json", "metrics.jsonl",
               "config.json"):
    a, b = os.path.join(committed, name), os.path.join(rerun, name)
    if not os.path.exists(a):
      continue  # not kept for this run
    if not os.path.exists(b):
      found.append(f"{name}: not written by the rerun")
  if found:
    return found, []
  params = os.path.join(committed, "params.msgpack")
  if os.path.exists(params):
    with open(params, "rb") as f, open(
        os.path.join(rerun, "params.msgpack"), "rb") as g:
      if f.read() != g.read():
        found.append("params.msgpack: the parameters differ")
  found_results, added_results = _apart(differences(
      files.read_json(os.path.join(committed, "results.json")),
      files.read_json(os.path.join(rerun, "results.json"))))
  found += [f"results.json{d}" for d in found_results]
  found += [f"metrics.jsonl{d}" for d in differences(
      _by_step(os.path.join(committed, "metrics.jsonl")),
      _by_step(os.path.join(rerun, "metrics.jsonl")))]
  found_config, added_config = _apart(differences(
      files.read_json(os.path.join(committed, "config.json")),
      files.read_json(os.path.join(rerun, "config.json"))))
  found += [f"config.json{d}" for d in found_config]
  return found, [f"results.json{f}" for f in added_results] + added_config


def _apart(found: Iterator[str]) -> tuple[list[str], list[str]]:
  """(differences, fields only the rerun has: a field this version writes
  and the committed run's did not, as its path)."""
  differ, added = [], []
  for d in found:
    if d.endswith(_ADDED):
      added.append(d.split(":")[0])
    else:
      differ.append(d)
  return differ, added


def record(results: str, path: str, found: list[str], added: list[str],
           committed: str, rerun: str) -> dict:
  """Appends this attempt at `path` to `results`/reproduced.json (every
  attempt is kept, newest last) and returns it. It names the CPU of the
  rerun and of the committed run: runs are bit-identical on one CPU model,
  not across models (XLA's code follows the host's instruction set)."""
  target = os.path.join(results, RECORD)
  recorded = files.read_json(target) if os.path.exists(target) else {}
  machine = files.read_json(os.path.join(rerun, "results.json")).get(
      "run", {})
  before = files.read_json(os.path.join(committed, "results.json")).get(
      "run", {})
  attempt = {"date": time.strftime("%Y-%m-%d"),
             "reproduces": not found, "differences": found[:20],
             "differences_count": len(found),
             "config_fields_added": added,
             "versions": machine.get("versions"),
             "machine": machine.get("machine"),
             "committed_machine": before.get("machine"),
             "same_cpu": same_cpu(before.get("machine"),
                                  machine.get("machine"))}
  recorded[path] = attempts(recorded.get(path)) + [attempt]
  files.write_json(target, dict(sorted(recorded.items())))
  return attempt


def attempts(entry) -> list[dict]:
  """A path's attempts in reproduced.json; one written before every
  attempt was kept is a single dict."""
  if entry is None:
    return []
  return [entry] if isinstance(entry, dict) else list(entry)


def same_cpu(a: Optional[dict], b: Optional[dict]) -> Optional[bool]:
  """Whether two runs' machine records name the same CPU model and
  instruction set, and the same usable cores where both record them; None
  when either does not record the CPU (runs before
  `runtime.cpu_identity`)."""
  if not a or not b or not all("cpu_model" in m and "isa" in m
                               for m in (a, b)):
    return None
  same = (a["cpu_model"], a["isa"]) == (b["cpu_model"], b["isa"])
  if "usable_cores" in a and "usable_cores" in b:
    same = same and a["usable_cores"] == b["usable_cores"]
  return same


def pinning(committed_machine: Optional[dict]) -> Optional[set[int]]:
  """The cores to pin a rerun to: as many as the committed run could use
  (its thread count changes the results' last bits), None to leave the
  rerun unpinned (the run did not record them, or used every core)."""
  wanted = (committed_machine or {}).get("usable_cores")
  available = sorted(os.sched_getaffinity(0))
  if wanted is None or wanted == len(available):
    return None
  if wanted > len(available):
    print(f"study.reproduce: the committed run used {wanted} cores, this"
          f" process may use {len(available)}; the rerun uses them all")
    return None
  return set(available[:wanted])


def reproduce(setting: settings_lib.Setting, path: str, scratch: str) -> int:
  """Retrains `path` in `scratch` and prints the comparison; 0 when it
  reproduces."""
  committed = os.path.join(setting.results, path)
  if not os.path.isfile(os.path.join(committed, "results.json")):
    raise SystemExit(f"study.reproduce: {committed} holds no finished run")
  stage = path.split("/")[0]
  results = os.path.join(scratch, "results")
  shutil.copytree(setting.results, results,
                  ignore=shutil.ignore_patterns("checkpoints"))
  shutil.rmtree(os.path.join(results, path))
  command = [sys.executable, "-m", "study.grid", "--setting", setting.name,
             "--stage", stage, "--results", results, "--workdirs",
             os.path.join(scratch, "runs"), "--only", path]
  cores = pinning(files.read_json(os.path.join(
      committed, "results.json")).get("run", {}).get("machine"))
  print("+", " ".join(command)
        + (f"  (pinned to cores {sorted(cores)})" if cores else ""),
        flush=True)
  subprocess.run(command, check=True, preexec_fn=(
      None if cores is None else lambda: os.sched_setaffinity(0, cores)))
  rerun = os.path.join(results, path)
  found, added = compare_runs(committed, rerun)
  if added:
    print(f"{path}: config fields added since it ran (their defaults):"
          f" {', '.join(added)}")
  for line in found:
    print(f"{path}: {line}")
  attempt = record(setting.results, path, found, added, committed, rerun)
  if found:
    print(f"{path}: committed on {_cpu(attempt['committed_machine'])},"
          f" rerun on {_cpu(attempt['machine'])}"
          + {None: " (whether the CPUs match is not recorded)",
             True: "", False: " (another CPU model or instruction set)"}[
                 attempt["same_cpu"]])
  print(f"{path}: {'reproduces' if not found else 'DIFFERS'}", flush=True)
  return 1 if found else 0


def _cpu(machine: Optional[dict]) -> str:
  if not machine:
    return "an unrecorded machine"
  return ", ".join(str(machine[k]) for k in ("cpu", "cpu_model", "system")
                   if k in machine)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--setting", default="fashion_mnist",
                      choices=sorted(settings_lib.SETTINGS))
  parser.add_argument("paths", nargs="+",
                      help="runs under the results, e.g. final/full/cam/seed0")
  args = parser.parse_args(argv)
  setting = settings_lib.SETTINGS[args.setting]
  status = 0
  for path in args.paths:
    scratch = tempfile.mkdtemp(prefix="reproduce_")
    differs = reproduce(setting, path.strip("/"), scratch)
    if differs:  # kept, to look into
      print(f"{path}: the rerun is kept in {scratch}/results/{path}")
    else:
      shutil.rmtree(scratch)
    status |= differs
  return status


if __name__ == "__main__":
  sys.exit(main())
