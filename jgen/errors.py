"""The errors jgen raises for user mistakes, one family under `JgenError`.

A command line (`launch.py`, `python -m jgen.convert`, ...) prints a `JgenError` as one message
and exits with status 2 without a traceback; `--verbose` (or ``JGEN_VERBOSE=1``) shows it.
`reported` (a context manager) and `report` are that one handler; every command line uses them.
Anything else that escapes is a bug and keeps its traceback. Each kind also subclasses the
built-in exception that code caught before the family existed (`ValueError`, `FileNotFoundError`,
`RuntimeError`), so ``except ValueError`` around a config check keeps working.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator, Sequence


class JgenError(Exception):
  """A mistake the user can fix: the message says what is wrong and what to do."""


class ConfigError(JgenError, ValueError):
  """An experiment config that cannot run: an unknown field, a value out of range."""


class DataError(JgenError, RuntimeError):
  """Data that cannot be read: a missing folder or file, an empty or corrupt source."""


class CheckpointError(JgenError, RuntimeError):
  """A work directory whose checkpoint is missing, unreadable or belongs to another run."""


class InitFromError(JgenError, ValueError):
  """An `init_from` that does not fit: a missing work directory, mismatched shapes or names."""


class ConversionError(JgenError, ValueError):
  """A published checkpoint that cannot be converted or exported: unknown names or formats."""


VERBOSE_ENV = "JGEN_VERBOSE"
VERBOSE_HELP = f"on a jgen error, show its traceback too (or set {VERBOSE_ENV}=1)"


def verbose_requested(argv: Sequence[str] | None = None) -> bool:
  """Whether a command line shows tracebacks: ``--verbose`` in `argv` (default ``sys.argv``) or
  ``JGEN_VERBOSE`` set to anything but ``""``/``0``/``false``."""
  argv = sys.argv[1:] if argv is None else argv
  env = os.environ.get(VERBOSE_ENV, "").strip().lower()
  return "--verbose" in argv or env not in ("", "0", "false", "no")


def report(error: BaseException, prog: str = "jgen", *, verbose: bool | None = None) -> int:
  """Prints `error` as ``<prog>: error: <message>`` on stderr (after its traceback when
  verbose) and returns 2, the exit status of a user mistake (argparse's for usage errors)."""
  if verbose_requested() if verbose is None else verbose:
    traceback.print_exception(error, file=sys.stderr)
  sys.stderr.write(f"{prog}: error: {error}\n")
  sys.stderr.flush()
  return 2


@contextlib.contextmanager
def reported(prog: str = "jgen", *, verbose: bool | None = None) -> Iterator[None]:
  """Turns a `JgenError` raised inside into `report` and ``SystemExit(2)``; anything else
  (a bug) passes with its traceback.

  Usable as ``with reported("python -m jgen.export"): sys.exit(main())`` or as a decorator.
  """
  try:
    yield
  except JgenError as e:
    raise SystemExit(report(e, prog, verbose=verbose)) from None
