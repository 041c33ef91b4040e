"""benchmarks/model_speed.py: the FLOP count and the peak it divides by.

The GPU check (benchmarks/gpu_check.sh) reports MFU from these; CI has no
GPU, so the arithmetic is checked here on CPU with a tiny model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import model_speed


def test_flops_of_a_matrix_product_are_two_per_multiply_add():
  a = jnp.ones((32, 48))
  b = jnp.ones((48, 16))
  compiled = jax.jit(jnp.matmul).lower(a, b).compile()
  assert model_speed.compiled_flops(compiled) == pytest.approx(
      2 * 32 * 48 * 16, rel=0.01)


@pytest.mark.parametrize("kind,dtype,want", [
    ("NVIDIA H200", "bfloat16", 989.0),
    ("NVIDIA H100 PCIe", "bfloat16", 756.0),  # not the SXM figure
    ("NVIDIA H100 80GB HBM3", "float32", 494.0),
    ("TPU v5 lite", "bfloat16", 197.0),
    ("TPU v5p", "bfloat16", 459.0),  # not v5e's
    ("TPU v4", "float32", None),  # no fp32 figure: no MFU, not a wrong one
    ("cpu", "bfloat16", None),
])
def test_peak_by_device_kind(kind, dtype, want):
  assert model_speed.peak_tflops(kind, dtype) == want


def test_mfu_is_xla_flops_times_rate_over_peak():
  result = model_speed.measure(
      "mlp", image_size=4, batch=8, dtype="float32", num_classes=4,
      embedding_dim=8, steps=2, repeats=3, model_kwargs={"width": 8},
      peak=1e-3)
  assert result["devices"] == jax.device_count()
  assert len(result["images_per_second_repeats"]) == 3
  assert result["images_per_second"] == np.median(
      result["images_per_second_repeats"])
  # flatten 4x4x3 -> 8 -> 8 -> embedding 8: forward alone is > 2 * 48 * 8
  # FLOPs per image; forward + backward is more.
  assert result["flops_per_image"] > 2 * 48 * 8
  assert result["flops_per_step"] == pytest.approx(
      8 * result["flops_per_image"])
  assert 0 < result["mfu"]
  assert np.isfinite(result["final_loss"])


def test_mfu_of_known_numbers():
  # 1 GFLOP per image at 1,000 images/s = 1 TFLOP/s, on 2 devices of 4
  # TFLOP/s peak: 1/8 of the peak.
  assert model_speed.model_flops_utilization(1e9, 1000, 4.0, 2) == (
      pytest.approx(0.125))
  assert model_speed.model_flops_utilization(2e9, 1000, 4.0, 1) == (
      pytest.approx(0.5))


def test_a_batch_the_devices_cannot_split_is_refused():
  with pytest.raises(ValueError, match="--batch 12 is not a multiple of"
                     " the 8 devices"):
    model_speed.measure("mlp", image_size=4, batch=12, dtype="float32")
