"""The command lines speak one line: --help exits 0; a flag, config or file
mistake is one line naming it, exit status 2, no traceback, and nothing
left in the work dir."""

import os

import pytest

from ra_jax import cli
from ra_jax.training import experiment
from ra_jax.training import workdir as workdir_lib
from tests import runs


def _cli(module, *args):
  return runs.cli(module, *args, timeout=120)


def _one_line_error(result, *fragments):
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  for fragment in fragments:
    assert fragment in lines[-1], lines[-1]


@pytest.mark.slow
def test_help_exits_0():  # every CLI runs through cli.run
  result = _cli("ra_jax.train", "--help")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "--workdir" in result.stdout and "python -m ra_jax.train" in (
      result.stdout)


@pytest.mark.slow
def test_train_errors_are_one_line_and_leave_nothing(tmp_path):
  workdir = tmp_path / "run"
  typo = _cli("ra_jax.train", "--config", "configs/digits.py", "--workdir",
              str(workdir), "--config.train.epohcs=3")
  _one_line_error(typo, "ra_jax.train: --config.train.epohcs=3: no such"
                  ' field; Did you mean "epochs"')
  # A value no run can use (the other values' checks are tested in
  # process: test_config_values_are_checked_before_the_data_is_loaded).
  zero = _cli("ra_jax.train", "--config", "configs/digits.py", "--workdir",
              str(workdir), "--config.train.global_batch_size=0")
  _one_line_error(zero, "train.global_batch_size=0: must be a number >= 1")
  assert not workdir.exists()


@pytest.mark.slow
def test_search_refuses_k_below_1(tmp_path):  # before loading anything
  _one_line_error(_cli("ra_jax.search", "--workdir", str(tmp_path),
                       "--query_index", "0", "--k", "0"),
                  "ra_jax.search: --k 0: give at least 1 neighbour")


def test_a_missing_config_file_is_one_line_naming_it():
  from ml_collections import config_flags
  del config_flags  # the chain below is what config_flags raises
  try:
    try:
      open("configs/nope.py")
    except OSError as inner:
      raise OSError("Failed loading config file config_config") from inner
  except OSError as error:
    assert cli.one_line(error) == (
        "[Errno 2] No such file or directory: 'configs/nope.py'")


def test_did_you_mean_survives_on_one_line():
  error = AttributeError("'\\'epohcs\\'\\nDid you mean \"epochs\" instead of"
                         " \"epohcs\"?'")
  message = cli.one_line(error)
  assert message == "'epohcs' Did you mean \"epochs\" instead of \"epohcs\"?"
  assert cli._naming_the_flag(message, ["--config.train.epohcs=3"]) == (
      "--config.train.epohcs=3: no such field; Did you mean \"epochs\""
      " instead of \"epohcs\"?")


def test_work_dirs_that_cannot_be_are_refused_before_anything(tmp_path):
  config = runs.tiny_config()
  (tmp_path / "file").write_text("not a directory")
  with pytest.raises(ValueError, match="is a file, not a directory"):
    workdir_lib.check(str(tmp_path / "file"), config)
  with pytest.raises(ValueError, match=r"file/run/more: .*file is a file"):
    workdir_lib.check(str(tmp_path / "file" / "run" / "more"), config)
  try:
    import gcsfs  # noqa: F401
  except ImportError:  # as in CI: a gs:// work dir names what is missing
    with pytest.raises(ValueError, match=r"work dir gs://b/run: .*gcsfs.*"
                       r"\(the \.\[gcs\] extra"):
      workdir_lib.check("gs://b/run", config)


@pytest.mark.parametrize("field,value,message", [
    ("train.global_batch_size", 0, "must be a number >= 1"),
    ("train.epochs", -1, "train.epochs=-1: must be a number >= 0"),
    ("optim.learning_rate", 0.0, "must be a number > 0"),
    ("eval.batch_size", 0, "eval.batch_size=0"),
    ("dataset.in_memory", "yes", "dataset.in_memory='yes': one of auto,"
     " always, never"),
    ("model.anchor_init", "simplex", "model.anchor_init='simplex': one of"
     " normal, orthogonal"),
])
def test_config_values_are_checked_before_the_data_is_loaded(
    field, value, message, tmp_path):
  config = runs.tiny_config()
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ValueError, match=message):
    experiment.validate_config(config)
  config = runs.tiny_config()
  config.loss.margin = -1.0
  with pytest.raises(ValueError, match="loss 'cam': `margin` must be"):
    experiment.build(config, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_training_labels_outside_the_classes_stop_the_run():
  from ra_jax.training import loop
  loop._check_labels([0, 3, 9], 10, step=1)  # fine
  with pytest.raises(ValueError, match=r"step 7: the training data has labels"
                     r" from -1 to 4, outside \[0, 4\)"):
    loop._check_labels([0, -1, 4], 4, step=7)


def test_a_search_grid_shows_at_most_max_tiles(tmp_path):
  import numpy as np
  from PIL import Image
  from ra_jax.trained import images, search
  tile = np.zeros((8, 8, 1), np.uint8)
  path = str(tmp_path / "grid.png")
  images.write_png(path, search.grid(tile, [tile] * 500, ["x"] * 500))
  assert Image.open(path).size[0] == 96 * (1 + search.MAX_TILES)
