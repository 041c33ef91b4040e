"""Every file ra_jax reads or writes in a work dir, local or on gs://.

Paths are strings, as users type them: a local path or a URL that
`etils.epath` understands (gs://, s3://, ...; the same library orbax uses
for checkpoints). The helpers here take either, so one code path serves a
laptop, a shared file system and a Cloud Storage bucket.

Writes are atomic: a reader never sees half of a file, and a failed or
interrupted write leaves the previous file, if any, untouched. Locally the
bytes go to a temporary file beside the target, which then replaces it
(`os.replace`). In object stores a rename is a copy and a delete, so the
bytes are collected in memory and uploaded as one object only once the
block has ended without an exception (an object upload is all or nothing).

Imports nothing of ra_jax, so every layer may use it.
"""

import contextlib
import io
import json
import os
from typing import Any, IO, Iterator, Union

from etils import epath

PathLike = Union[str, os.PathLike]


def is_remote(path: PathLike) -> bool:
  """True for URLs (gs://bucket/...), False for local paths."""
  return "://" in os.fspath(path)


def path(path: PathLike) -> epath.Path:
  """`path` as an `epath.Path` (pathlib's API, for local paths and URLs)."""
  return epath.Path(path)


def absolute(path: PathLike) -> str:
  """A local path made absolute; URLs as they are."""
  path = os.fspath(path)
  return path if is_remote(path) else os.path.abspath(path)


def join(*parts: PathLike) -> str:
  return os.path.join(*[os.fspath(p) for p in parts])


def exists(path: PathLike) -> bool:
  return epath.Path(path).exists()


def isdir(path: PathLike) -> bool:
  return epath.Path(path).is_dir()


def makedirs(path: PathLike) -> None:
  epath.Path(path).mkdir(parents=True, exist_ok=True)


def listdir(path: PathLike) -> list[str]:
  """Names in a directory, sorted; [] when it does not exist."""
  directory = epath.Path(path)
  if not directory.is_dir():
    return []
  return sorted(p.name for p in directory.iterdir())


def walk(root: PathLike) -> Iterator[tuple[str, list[str], list[str]]]:
  """os.walk for local paths and URLs: (directory, subdirs, files), top
  down; removing names from `subdirs` prunes the walk, as with os.walk."""
  for directory, subdirs, names in epath.Path(root).walk():
    yield os.fspath(directory), subdirs, names


def move(source: PathLike, target: PathLike) -> None:
  """Moves a file or a directory tree. Locally a rename. Object stores have
  neither directories nor renames (a "directory" rename needs its
  destination prefix to exist, which creating directories cannot make on a
  flat bucket): every object is copied to its new name, then the source is
  deleted — only once every copy has succeeded."""
  if not is_remote(source):
    makedirs(os.path.dirname(os.path.abspath(os.fspath(target))))
    epath.Path(source).rename(target)
    return
  origin = epath.Path(source)
  def copy(a, b):  # a no-op makedirs on a bucket; a folder elsewhere
    makedirs(os.path.dirname(os.fspath(b)))
    epath.Path(a).copy(b, overwrite=True)
  if not origin.is_dir():
    copy(source, target)
    origin.unlink()
    return
  for directory, _, names in walk(source):
    for name in names:
      relative = os.path.relpath(join(directory, name), os.fspath(source))
      copy(join(directory, name), join(target, relative))
  origin.rmtree()


def open_file(path: PathLike, mode: str = "r") -> IO:
  """Opens a file for reading ("r", "rb") or appending ("a", local only)."""
  return epath.Path(path).open(mode)


def read_text(path: PathLike) -> str:
  return epath.Path(path).read_text()


def read_json(path: PathLike) -> Any:
  return json.loads(read_text(path))


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w") -> Iterator[IO]:
  """Yields a file object whose contents become `path` when the block ends
  without an exception. `mode`: "w" (text) or "wb" (bytes)."""
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
  path = os.fspath(path)
  if is_remote(path):
    buffer = io.StringIO() if mode == "w" else io.BytesIO()
    yield buffer
    target = epath.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = buffer.getvalue()
    target.write_bytes(data.encode() if mode == "w" else data)
    return
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


def write_json(path: PathLike, payload: Any, *, indent: int = 1) -> None:
  """`payload` as JSON at `path`, atomically."""
  text = json.dumps(payload, indent=indent)  # fails before anything is written
  with atomic_write(path) as f:
    f.write(text)


def write_text(path: PathLike, text: str) -> None:
  """`text` at `path`, atomically."""
  with atomic_write(path) as f:
    f.write(text)


def append_line(path: PathLike, line: str) -> None:
  """Adds one line to a text file (`append_lines`)."""
  append_lines(path, [line])


def append_lines(path: PathLike, lines: list[str]) -> None:
  """Adds lines to a text file. Locally an append; object stores cannot
  append, so there the whole file is read and written again (atomically,
  one upload), which is fine for the small logs ra_jax appends to — and
  why callers there collect lines and append them now and then."""
  text = "".join(line + "\n" for line in lines)
  if is_remote(path):
    before = read_text(path) if exists(path) else ""
    write_text(path, before + text)
  else:
    makedirs(os.path.dirname(os.path.abspath(path)))
    with open(path, "a") as f:
      f.write(text)
