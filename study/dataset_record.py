"""Every run of a setting sees the same images, across sittings and machines.

A setting's runs are compared with each other, but they train over many
sittings, and a fresh machine rebuilds the dataset: font_chars from
whatever font packages Debian serves that day. The first stage that runs
writes `<results>/dataset.json` (the source's description with its
fingerprint, and the build's metadata: for font_chars every font's
package, version and hash); every later stage, on any machine, refuses to
train on a dataset with another fingerprint, and says what differs.
"""

import json
from typing import Any, Optional

from ra_jax import files

RECORD = "dataset.json"


class DatasetChangedError(ValueError):
  """The dataset here is not the one a setting's finished runs used."""


def describe(config) -> dict[str, Any]:
  """What a run with `config` trains on: its source's description
  (`DatasetSource.describe()`, the fingerprint included) and the build's
  metadata. Builds the dataset if it is not built yet; the source is the
  trainer's own (`experiment.loaded_source`), loaded once per process, so
  the run that follows uses the very source that was checked."""
  from ra_jax.training import experiment
  source = experiment.loaded_source(config)
  return {**source.describe(), "metadata": dict(source.metadata)}


def _listed(value: Any) -> Optional[set]:
  """A list of records as a set of their JSON texts (None if not a list)."""
  if not isinstance(value, list):
    return None
  return {json.dumps(v, sort_keys=True, default=str) for v in value}


def differences(kept: dict[str, Any], here: dict[str, Any]) -> list[str]:
  """What differs between two `describe` results, one phrase per field
  (lists of records, such as the fonts, by how many are only in each)."""
  out = []
  for scope, a, b in (("", kept, here),
                      ("metadata.", kept.get("metadata") or {},
                       here.get("metadata") or {})):
    for key in sorted(set(a) | set(b)):
      if key in ("metadata", "fingerprint") and not scope:
        continue
      old, new = a.get(key), b.get(key)
      if old == new:
        continue
      old_set, new_set = _listed(old), _listed(new)
      if old_set is not None and new_set is not None:
        out.append(f"{scope}{key}: {len(old_set & new_set)} the same,"
                   f" {len(old_set - new_set)} only in the record,"
                   f" {len(new_set - old_set)} only here")
      else:
        out.append(f"{scope}{key}: {_short(old)} in the record, {_short(new)}"
                   " here")
  return out


def _short(value: Any, limit: int = 80) -> str:
  text = repr(value)
  return text if len(text) <= limit else text[:limit - 3] + "..."


def check(results_dir: str, dataset: dict[str, Any]) -> None:
  """Writes `dataset` to `<results_dir>/dataset.json` if there is no record
  yet; else raises DatasetChangedError unless the fingerprints agree. A
  dataset without a fingerprint (one not built by TFDS) is not checked."""
  path = files.join(results_dir, RECORD)
  if not dataset.get("fingerprint"):
    return
  if not files.exists(path):
    files.makedirs(results_dir)
    files.write_json(path, dataset)
    return
  kept = files.read_json(path)
  if kept.get("fingerprint") == dataset["fingerprint"]:
    return
  what = "; ".join(differences(kept, dataset)) or "nothing but the fingerprint"
  raise DatasetChangedError(
      f"{path} records dataset {kept.get('name')!r} with fingerprint"
      f" {kept.get('fingerprint')!r}; the one built here has"
      f" {dataset['fingerprint']!r}, so its runs would not compare with the"
      f" finished ones. What differs: {what}. Build it from the same files"
      " (the record's metadata lists them) or move that results directory"
      " away to start the setting again.")


def check_run(results_dir: str, results: dict[str, Any]) -> None:
  """A finished run's results.json against the record (a dataset that
  changed while a stage ran)."""
  fingerprint = (results.get("dataset") or {}).get("fingerprint")
  path = files.join(results_dir, RECORD)
  if fingerprint and files.exists(path):
    kept = files.read_json(path).get("fingerprint")
    if kept != fingerprint:
      raise DatasetChangedError(
          f"the run just trained used dataset fingerprint {fingerprint!r},"
          f" {path} records {kept!r}: the dataset changed during the stage;"
          " the run is not kept")
