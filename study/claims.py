"""Which worker trains which run, when several study.grid workers share one
machine's work dirs (`study.grid --workers N`): a worker claims a run by
holding an exclusive lock (flock) on `<workdirs>/.claims/<run path, / as
%>` while it trains it. The kernel drops the lock when the process ends,
however it ends, so a killed worker's run is free at once and resumes from
its checkpoint in whichever worker reaches it first; no claim goes stale.
flock coordinates the processes of one machine (local file systems);
work dirs that several machines share are not supported.
"""

import contextlib
import fcntl
import os
from typing import IO, Iterator

DIRECTORY = ".claims"
_held: dict[str, IO] = {}


def _file(workdirs: str, path: str) -> str:
  return os.path.join(workdirs, DIRECTORY, path.replace("/", "%"))


def claim(workdirs: str, path: str) -> bool:
  """Claims `path` for this process: True if it now holds the claim (or
  held it already), False while another process holds it."""
  if path in _held:
    return True
  target = _file(workdirs, path)
  os.makedirs(os.path.dirname(target), exist_ok=True)
  handle = open(target, "a")
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.close()
    return False
  _held[path] = handle
  return True


def release(path: str) -> None:
  """Gives back this process's claim on `path`, if it holds one."""
  handle = _held.pop(path, None)
  if handle is not None:
    handle.close()  # closing the file drops the lock


@contextlib.contextmanager
def exclusive(workdirs: str, name: str) -> Iterator[None]:
  """Holds the lock `name` for the block, waiting for another process that
  holds it (for work that must not run twice at once, such as building a
  dataset)."""
  target = _file(workdirs, name)
  os.makedirs(os.path.dirname(target), exist_ok=True)
  with open(target, "a") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    yield
