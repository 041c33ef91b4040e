"""Test session set-up: 8 fake CPU devices, so sharding runs in-process.

XLA reads the flag once, when the backend starts, so it must be set before
anything imports jax.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " +
                             _FLAG).strip()

# Many tests compile the same tiny programs (the digits ResNet, its optimizer,
# the search and metric kernels). A compilation cache shared by the test
# session and the subprocesses it starts compiles each once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
      prefix="ra_jax_test_jit_cache_")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.1"
