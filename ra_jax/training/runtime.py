"""Process set-up for one run: `jax.distributed` when asked, and who writes.

A run is one process per host (or per GPU). `initialize` must come before
anything touches a device. Whether to initialise is `config.distributed`:
"on", "off", or "auto" (the default), which initialises when the environment
describes a multi-process job: `JAX_COORDINATOR_ADDRESS` (launch/local.sh and
any hand-made launch), SLURM with more than one task, or Open MPI with more
than one rank. TPU pods cannot be recognised from the environment alone, so
launch/tpu_pod.sh passes `--config.distributed=on`.
"""

import os
import platform
from typing import Mapping, Optional, Union

import jax
from absl import logging

Setting = Union[str, bool]


def _count(environ: Mapping[str, str], name: str) -> int:
  try:
    return int(environ.get(name, "1"))
  except ValueError:
    return 1


def wants_distributed(setting: Setting,
                      environ: Optional[Mapping[str, str]] = None) -> bool:
  """Whether `setting` ("on" | "off" | "auto", or a bool) asks for
  `jax.distributed.initialize` in this environment."""
  environ = os.environ if environ is None else environ
  if isinstance(setting, bool):
    return setting
  if setting not in ("on", "off", "auto"):
    raise ValueError(f"config.distributed must be 'on', 'off' or 'auto', got"
                     f" {setting!r}")
  if setting != "auto":
    return setting == "on"
  return bool(environ.get("JAX_COORDINATOR_ADDRESS") or
              _count(environ, "SLURM_NTASKS") > 1 or
              _count(environ, "OMPI_COMM_WORLD_SIZE") > 1)


def initialize(setting: Setting) -> bool:
  """Starts `jax.distributed` if `setting` asks for it; returns whether it
  did. `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` complete
  `JAX_COORDINATOR_ADDRESS` where no cluster manager supplies them, and CPU
  processes get gloo collectives (XLA:CPU has no other cross-process
  implementation)."""
  if not wants_distributed(setting):
    return False
  if os.environ.get("JAX_PLATFORMS", "").split(",")[0] == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if "JAX_NUM_PROCESSES" in os.environ:
    kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
    kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
  jax.distributed.initialize(**kwargs)
  return True


def describe() -> dict:
  """This process's place in the job."""
  return {"process_index": jax.process_index(),
          "process_count": jax.process_count(),
          "local_devices": jax.local_device_count(),
          "global_devices": jax.device_count(),
          "platform": jax.devices()[0].platform,
          "device_kind": jax.devices()[0].device_kind}


def environment() -> dict:
  """Versions and machine, recorded in every results.json."""
  import importlib.metadata
  versions = {}
  for package in ("ra_jax", "jax", "jaxlib", "flax", "optax",
                  "orbax-checkpoint", "grain", "tensorflow-datasets", "numpy"):
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      pass
  return {"versions": versions, "python": platform.python_version(),
          "machine": {**cpu_identity(), "cpu_count": os.cpu_count(),
                      "usable_cores": usable_cores(),
                      "system": platform.platform()},
          **describe()}


def usable_cores() -> int:
  """The cores this process may run on (its CPU affinity). XLA sizes its
  CPU thread pool by them, and the thread count changes how the CPU
  kernels split their sums: the same run pinned to 1 core and on 2 cores
  differs in the last bits (benchmarks/process_split.py's note)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


# The CPU features XLA's generated code and the kernels it calls dispatch on:
# two hosts that differ in them may round differently (a run trained on one
# is bit-identical there, not on the other).
_ISA_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4", "bmi")


def cpu_identity(cpuinfo: str = "/proc/cpuinfo") -> dict:
  """The CPU's name, and on Linux its model ("family F model M stepping S")
  and the vector-instruction flags of `_ISA_PREFIXES`, sorted."""
  out = {"cpu": platform.processor() or platform.machine()}
  try:
    with open(cpuinfo) as f:
      first = f.read().split("\n\n", 1)[0]
  except OSError:
    return out
  fields = {}
  for line in first.splitlines():
    key, _, value = line.partition(":")
    fields.setdefault(key.strip(), value.strip())
  if "model name" in fields:
    out["cpu"] = fields["model name"]
  if "cpu family" in fields:
    out["cpu_model"] = (f"family {fields['cpu family']} model"
                        f" {fields.get('model', '?')} stepping"
                        f" {fields.get('stepping', '?')}")
  if "flags" in fields:
    out["isa"] = sorted(flag for flag in fields["flags"].split()
                        if flag.startswith(_ISA_PREFIXES))
  return out


def log_start() -> None:
  info = describe()
  logging.warning("process %d of %d: %d local / %d global %s devices (%s)",
                  info["process_index"], info["process_count"],
                  info["local_devices"], info["global_devices"],
                  info["platform"], info["device_kind"])


def is_writer() -> bool:
  """Only process 0 writes logs, metrics and results; every process takes
  part in checkpointing (orbax coordinates the writes)."""
  return jax.process_index() == 0
