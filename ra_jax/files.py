"""Writing files so that a reader never sees half of one.

Every file ra_jax writes (config.json, results, indexes, reports, figures,
few-shot selections) goes through `atomic_write`: the bytes go to a temporary
file beside the target, which replaces the target only once it is complete.
A failed or interrupted write leaves the previous file, if any, untouched.
Imports nothing of ra_jax, so every layer may use it.
"""

import contextlib
import json
import os
from typing import Any, IO, Iterator


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w") -> Iterator[IO]:
  """Yields a file object whose contents become `path` when the block ends
  without an exception. `mode`: "w" (text) or "wb" (bytes)."""
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory,
                     f".{os.path.basename(path)}.tmp{os.getpid()}")
  try:
    with open(tmp, mode) as f:
      yield f
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json(path: str, payload: Any, *, indent: int = 1) -> None:
  """`payload` as JSON at `path`, atomically."""
  text = json.dumps(payload, indent=indent)  # fails before anything is written
  with atomic_write(path) as f:
    f.write(text)


def write_text(path: str, text: str) -> None:
  """`text` at `path`, atomically."""
  with atomic_write(path) as f:
    f.write(text)
