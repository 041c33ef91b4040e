"""A setting's runs all train on one dataset: the record and its check."""

import json

import pytest

from ra_jax.data import catalog
from study import dataset_record, grid, settings


def _fonts(*hashes: str) -> dict:
  return {"name": "font_chars/full", "split_sizes": {"train": 3},
          "metadata": {"faces": [{"path": f"/f{i}.ttf", "sha256": h}
                                 for i, h in enumerate(hashes)]}}


def _described(**described) -> dict:
  meta = described["metadata"]
  return {**described, "fingerprint": catalog.tfds_fingerprint(
      "font_chars/full/1.0.0", described["split_sizes"], meta)}


def test_the_first_check_records_the_dataset_and_a_changed_one_is_refused(
    tmp_path):
  first = _described(**_fonts("a", "b", "c"))
  dataset_record.check(str(tmp_path), first)
  record = tmp_path / dataset_record.RECORD
  assert json.loads(record.read_text()) == first
  dataset_record.check(str(tmp_path), dict(first))  # the same: passes
  # one font file changed, one added: another fingerprint
  other = _described(**_fonts("a", "b", "x", "y"))
  assert other["fingerprint"] != first["fingerprint"]
  with pytest.raises(dataset_record.DatasetChangedError) as error:
    dataset_record.check(str(tmp_path), other)
  message = str(error.value)
  assert str(record) in message and first["fingerprint"] in message
  assert other["fingerprint"] in message
  assert ("metadata.faces: 2 the same, 1 only in the record, 2 only here"
          in message)
  assert json.loads(record.read_text()) == first  # the record is kept
  # a finished run's own fingerprint is checked too
  with pytest.raises(dataset_record.DatasetChangedError, match="not kept"):
    dataset_record.check_run(str(tmp_path), {"dataset": other})
  dataset_record.check_run(str(tmp_path), {"dataset": first})
  dataset_record.check_run(str(tmp_path), {"exact": {}})  # a fake result


def test_a_dataset_without_fingerprint_is_not_recorded(tmp_path):
  dataset_record.check(str(tmp_path), {"name": "digits", "fingerprint": ""})
  assert not (tmp_path / dataset_record.RECORD).exists()


def test_differences_name_each_field_that_changed():
  kept = {"name": "a", "split_sizes": {"train": 3}, "fingerprint": "1",
          "metadata": {"pillow": "10.0", "seed": 0}}
  here = {"name": "a", "split_sizes": {"train": 4}, "fingerprint": "2",
          "metadata": {"pillow": "11.0", "seed": 0}}
  assert dataset_record.differences(kept, here) == [
      "split_sizes: {'train': 3} in the record, {'train': 4} here",
      "metadata.pillow: '10.0' in the record, '11.0' here"]


def test_the_grid_trains_nothing_on_another_dataset(tmp_path):
  """A stage that would train on a dataset other than the recorded one
  stops before its first run and keeps every file as it was."""
  setting = settings.FONT_CHARS
  results, work = tmp_path / "results", tmp_path / "work"
  dataset_record.check(str(results), _described(**_fonts("a")))
  before = (results / dataset_record.RECORD).read_text()
  trained = []

  def train(config, workdir):
    trained.append(workdir)
    return {"exact": {"map": 0.5, "precision@10": 0.5}}

  with pytest.raises(dataset_record.DatasetChangedError):
    grid.run_stage(setting, "tuning", str(results), str(work), train=train,
                   dataset=lambda config: _described(**_fonts("b")))
  # nothing in the work dirs but the workers' locks (study/claims.py)
  assert trained == [] and [p.name for p in work.iterdir()] == [".claims"]
  assert (results / dataset_record.RECORD).read_text() == before


def test_describe_reads_the_run_config_dataset():
  from configs import digits
  described = dataset_record.describe(digits.get_config())
  assert described["name"] == "digits" and described["fingerprint"] == ""
  assert described["metadata"] == {} and described["split_sizes"]["train"]
