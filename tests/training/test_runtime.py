"""When a run starts jax.distributed, and who writes."""

import pytest

from ra_jax.training import runtime


@pytest.mark.parametrize("setting,environ,expected", [
    ("auto", {}, False),
    ("auto", {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
    ("auto", {"SLURM_NTASKS": "1"}, False),
    ("auto", {"SLURM_NTASKS": "16"}, True),
    ("auto", {"OMPI_COMM_WORLD_SIZE": "4"}, True),
    ("auto", {"SLURM_NTASKS": "many"}, False),
    ("on", {}, True),
    ("off", {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, False),
    (True, {}, True),
    (False, {"SLURM_NTASKS": "16"}, False),
])
def test_wants_distributed(setting, environ, expected):
  assert runtime.wants_distributed(setting, environ) is expected


def test_bad_setting_names_the_field():
  with pytest.raises(ValueError, match="config.distributed must be"):
    runtime.wants_distributed("yes", {})


def test_single_process_description():
  info = runtime.describe()
  assert info["process_index"] == 0 and info["process_count"] == 1
  assert info["global_devices"] == info["local_devices"] == 8
  assert runtime.is_writer()
