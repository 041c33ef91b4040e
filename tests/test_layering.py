"""The layering promise: the library imports no trainer, losses and
retrieval import no Flax — checked in the source (every import statement,
lazy ones inside functions included) and in a fresh interpreter."""

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "ra_jax"
# package -> the ra_jax packages it may import (besides itself)
_LIBRARY = {"distances", "files", "timing", "losses", "retrieval", "models",
            "data"}
ALLOWED = {
    "files": set(),
    "distances": set(),
    "timing": set(),
    "losses": {"distances", "files"},
    "retrieval": {"distances", "files", "timing"},
    "models": {"distances", "files"},
    "data": {"files"},
    "training": _LIBRARY,
    "trained": _LIBRARY | {"training"},
    "report": _LIBRARY | {"training", "trained", "cli"},
}
NO_FLAX = ("files", "distances", "timing", "losses", "retrieval")


def _imports(path: pathlib.Path) -> set[str]:
  """Every module an import statement in `path` names (absolute form)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return names


def _package_of(path: pathlib.Path) -> str:
  return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_every_import_statement_keeps_to_the_layers(package):
  root = PACKAGE / package
  sources = sorted(root.rglob("*.py")) if root.is_dir() else [
      PACKAGE / f"{package}.py"]
  bad = []
  for path in sources:
    for name in _imports(path):
      parts = name.split(".")
      if parts[0] == "flax" and package in NO_FLAX:
        bad.append(f"{path.name}: {name}")
      if parts[0] == "ra_jax" and len(parts) > 1:
        target = parts[1]
        known = (PACKAGE / target).is_dir() or (PACKAGE / f"{target}.py").exists()
        if known and target != package and target not in ALLOWED[package]:
          bad.append(f"{path.name}: {name}")
  assert not bad, f"ra_jax.{package} imports what its layer may not: {bad}"


@pytest.mark.slow  # a fresh interpreter each
@pytest.mark.parametrize("module", ["ra_jax.losses", "ra_jax.distances",
                                    "ra_jax.retrieval", "ra_jax.files",
                                    "ra_jax.timing"])
def test_module_imports_neither_flax_nor_the_trainer(module):
  _check_imports(module, forbid_flax=True)


@pytest.mark.slow
@pytest.mark.parametrize("module", ["ra_jax.models", "ra_jax.data"])
def test_library_imports_no_trainer(module):
  _check_imports(module, forbid_flax=False)


def _check_imports(module, forbid_flax):
  code = (f"import sys, {module}; "
          "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'flax' "
          f"and {forbid_flax} "
          "or m.startswith(('ra_jax.train', 'ra_jax.report'))); "
          "print(','.join(bad))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, check=True)
  assert result.stdout.strip() == "", f"{module} imported {result.stdout}"
