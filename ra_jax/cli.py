"""What every ra_jax command line shares: `--help` exits 0, and a mistake in a
flag, the configuration or a file is one line on stderr naming it, exit
status 2, no traceback (`--verbosity=1` shows it). Anything else is a bug
and keeps its traceback.

  if __name__ == "__main__":
    cli.run(main)
"""

import re
import sys
from typing import Callable, NoReturn, Optional

from absl import app
from absl import flags
from absl import logging

# What a user can get wrong on the command line: flags, config overrides
# (typos surface as KeyError / AttributeError, wrong types as TypeError),
# config files.
FLAG_ERRORS = (flags.Error, ValueError, KeyError, AttributeError, TypeError,
               OSError)
# ... and while the command runs: config values, paths, files, datasets.
RUN_ERRORS = (ValueError, OSError)


def _name() -> str:
  spec = getattr(sys.modules["__main__"], "__spec__", None)
  if spec is None:
    return sys.argv[0]
  return spec.name.removesuffix(".__main__")


def one_line(error: BaseException) -> str:
  """The error's message on one line. An OSError (or a flag error caused by
  one) speaks through its innermost cause: a config file fails as a chain
  whose last link says why. A message that carries a traceback (a config
  file's get_config raised) keeps only the traceback's last line."""
  while isinstance(error, (OSError, flags.Error)) and isinstance(
      error.__cause__ or error.__context__, OSError):
    error = error.__cause__ or error.__context__
  text = error.args[0] if len(error.args) == 1 and isinstance(
      error.args[0], str) else str(error)
  if "Traceback (most recent call last)" in text:
    head = text.split("Traceback (most recent call last)")[0].rstrip(" :\n")
    last = [line for line in text.splitlines() if line.strip()][-1]
    text = f"{head.rsplit(': ', 1)[0]}: {last.strip()}" if head else last
  if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
    text = text[1:-1]  # a KeyError's repr
  text = text.replace("\\n", " ").replace("\\'", "'")
  return " ".join(text.split())


def _naming_the_flag(message: str, argv: list[str]) -> str:
  """Prefixes the command-line argument a config-override error is about
  (ml_collections names only the last key)."""
  match = re.match(r"'(\w+)'", message)
  if match:
    for arg in argv:
      if arg.startswith("--config.") and f".{match.group(1)}" in (
          arg.partition("=")[0]):
        return f"{arg}: no such field; {message[match.end():].strip()}"
  return message


def fail(message: str) -> NoReturn:
  print(f"{_name()}: {message}", file=sys.stderr)
  sys.exit(2)


def _verbose(argv: list[str]) -> bool:
  for arg in argv:
    if arg in ("-v", "--v") or arg.startswith(("--verbosity=", "--v=")):
      level = arg.partition("=")[2] or "1"
      if level.lstrip("-").isdigit() and int(level) >= 1:
        return True
  return False


def _help() -> NoReturn:
  doc = (sys.modules["__main__"].__doc__ or "").strip()
  print(doc + "\n\nflags:\n" + flags.FLAGS.main_module_help())
  sys.exit(0)


def _parse(argv: list[str]) -> list[str]:
  if any(arg in ("-h", "--help", "-help", "--helpshort", "--helpfull")
         for arg in argv[1:]):
    _help()
  try:
    return flags.FLAGS(argv)
  except FLAG_ERRORS as error:
    if _verbose(argv):
      raise
    fail(_naming_the_flag(one_line(error), argv))


def run(main: Callable[[list[str]], object],
        errors: tuple[type[BaseException], ...] = ()) -> None:
  """`absl.app.run(main)` with the behaviour in the module docstring;
  `errors`: more exception types `main` raises for the user's input."""
  verbose = _verbose(sys.argv)

  def guarded(argv):
    try:
      return main(argv)
    except RUN_ERRORS + errors as error:
      if verbose:
        raise
      fail(one_line(error))

  app.run(guarded, flags_parser=_parse)


def report_errors(write: Callable[[], object], done: str) -> int:
  """For argparse mains (the reports): `write()`, then `done` on stdout;
  the user's path or file mistakes (OSError, ValueError) one line on
  stderr, exit status 2. Returns 0."""
  try:
    write()
  except RUN_ERRORS as error:
    fail(one_line(error))
  print(done)
  return 0


def workdir_flag(help_text: str = "a trained run's work dir", *,
                 required: bool = True) -> flags.FlagHolder:
  """The --workdir flag every command takes (required unless said)."""
  holder = flags.DEFINE_string("workdir", None, help_text)
  if required:
    flags.mark_flag_as_required("workdir")
  return holder


def index_storage_flag() -> flags.FlagHolder:
  """--index_storage: where a command keeps the database index (the run's
  eval.index_storage unless given)."""
  return flags.DEFINE_enum(
      "index_storage", None, ["memory", "disk", "disk_float16"],
      "the database index: 'memory' (index/step_<N>.npz) or, for databases"
      " larger than memory, 'disk' / 'disk_float16' (a memory-mapped"
      " directory index/step_<N>/); default: the run's eval.index_storage")


def start(workdir: Optional[str] = None, config=None):
  """What a command does first: absl logging at WARNING (orbax logs every
  save at INFO), the run's config (`config`, else `workdir`'s config.json)
  and `jax.distributed` when that config asks for it. Returns the config
  (None for a command about no run: logging only)."""
  logging.set_verbosity(logging.WARNING)
  if config is None and workdir is None:
    return None
  from ra_jax.training import runtime
  from ra_jax.training import workdir as workdir_lib
  if config is None:
    config = workdir_lib.config_of(workdir)
  runtime.initialize(config.get("distributed", "auto"))
  return config
