"""The layering promise: the library imports no trainer, losses import no Flax."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module",
                         ["ra_jax.losses", "ra_jax.distances", "ra_jax.retrieval"])
def test_module_imports_neither_flax_nor_the_trainer(module):
  _check_imports(module, forbid_flax=True)


@pytest.mark.parametrize("module", ["ra_jax.models", "ra_jax.data"])
def test_library_imports_no_trainer(module):
  _check_imports(module, forbid_flax=False)


def _check_imports(module, forbid_flax):
  code = (f"import sys, {module}; "
          "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'flax' "
          f"and {forbid_flax} "
          "or m.startswith(('ra_jax.training', 'ra_jax.train'))); "
          "print(','.join(bad))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, check=True)
  assert result.stdout.strip() == "", f"{module} imported {result.stdout}"
