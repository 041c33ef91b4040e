"""The `Examples:` in the losses' docstrings run and print what they say
(optax style: the documentation is checked code)."""

import doctest
import importlib

import pytest

MODULES = ["class_anchor_margin", "classification", "contrastive",
           "proxy_anchor", "triplet"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(f"ra_jax.losses.{name}")
  result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0, f"{name} has no examples"
  assert result.failed == 0
