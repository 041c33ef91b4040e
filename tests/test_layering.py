"""The layering promise: the library imports no trainer, losses and
retrieval import no Flax — checked in the source (every import statement,
lazy ones inside functions included) and in a fresh interpreter."""

import ast
import json
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


# The library's packages, lowest layer first: importing them in this order
# in one fresh interpreter, whatever a package's import adds to sys.modules
# is what it pulls in beyond the layers below it.
IMPORT_ORDER = ("ra_jax.files", "ra_jax.distances", "ra_jax.timing",
                "ra_jax.losses", "ra_jax.retrieval", "ra_jax.models",
                "ra_jax.data")
_IMPORTS = """
import importlib, json, sys
added = {}
for name in ORDER:
  before = set(sys.modules)
  importlib.import_module(name)
  added[name] = sorted(set(sys.modules) - before)
print(json.dumps(added))
"""


@pytest.mark.slow  # a fresh interpreter
def test_importing_the_library_imports_no_trainer_and_flax_where_promised():
  result = subprocess.run(
      [sys.executable, "-c", f"ORDER = {IMPORT_ORDER!r}" + _IMPORTS],
      capture_output=True, text=True, check=True)
  added = json.loads(result.stdout.strip().splitlines()[-1])
  assert list(added) == list(IMPORT_ORDER)
  assert "flax" in added["ra_jax.models"]  # the check sees what it should
  for module, names in added.items():
    upper = [m for m in names
             if m.startswith(("ra_jax.train", "ra_jax.report"))]
    assert not upper, f"{module} imported {upper}"
    if module.removeprefix("ra_jax.") in NO_FLAX:
      flax = [m for m in names if m.split(".")[0] == "flax"]
      assert not flax, f"{module} imported {flax}"
