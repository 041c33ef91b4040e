"""A finished run, loaded: reading it writes nothing into its work dir."""

import os

import pytest

from ra_jax.trained import TrainedRun
from tests import runs


def _tree(root):
  return {os.path.relpath(os.path.join(d, f), root): os.path.getmtime(
      os.path.join(d, f)) for d, _, names in os.walk(root) for f in names}


@pytest.mark.slow
def test_loading_a_run_writes_nothing(digits_run):
  before = _tree(digits_run)
  TrainedRun(digits_run)
  run = TrainedRun(digits_run, runs.tiny_config())  # a given, matching config
  assert _tree(digits_run) == before
  run.database_index(cache=False, progress=False)
  assert _tree(digits_run) == before
  other = runs.tiny_config()
  other.model.width = 64  # another model: refused, and nothing written
  with pytest.raises(ValueError, match="another model configuration"):
    TrainedRun(digits_run, other)
  assert _tree(digits_run) == before
