"""The README's main command: the digits demo really learns."""

import pytest

from ra_jax import demo


@pytest.mark.slow
def test_demo_learns_digits():
  results = demo.run(steps=200, embedding_dim=16, seed=0)
  assert results["nearest_anchor_accuracy"] > 0.9
  assert results["precision@10"] > 0.9
  assert results["map"] > 0.8
  assert results["min_anchor_distance"] > 1.9  # anchors 2 * margin apart
