"""The errors jgen raises for user mistakes, one family under `JgenError`.

A command line (`launch.py`, `python -m jgen.convert`, ...) prints a `JgenError` as one message
and exits with status 2 without a traceback; `--verbose` (or ``JGEN_VERBOSE=1``) shows it.
Anything else that escapes is a bug and keeps its traceback. Each kind also subclasses the
built-in exception that code caught before the family existed (`ValueError`, `FileNotFoundError`,
`RuntimeError`), so ``except ValueError`` around a config check keeps working.
"""

from __future__ import annotations


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
