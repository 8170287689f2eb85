"""launch.py's flag parsing: absl's, with its errors reported as jgen errors.

absl reports a flag error in two lines with exit status 1, and ml_collections turns an error of
the config file (or an override of a field the config lacks) into a traceback; `parse` reports
each as one `jgen: error:` line with exit status 2 (`jgen.errors.report`).
"""

from __future__ import annotations

import os

from absl import flags

from jgen import errors

__all__ = ["parse"]


def _missing_config_file(argv: list[str]) -> errors.ConfigError | None:
  """A `--config` file that is not there (ml_collections would defer the error to a traceback)."""
  values = []  # the last one counts, as for absl
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      values.append(a.split("=", 1)[1])
    elif a == "--config" and i + 1 < len(argv):
      values.append(argv[i + 1])
  path = values[-1].split(":", 1)[0] if values else None
  if path is None or os.path.isfile(path):
    return None
  return errors.ConfigError(f"--config={values[-1]}: {path} is not a file (relative to "
                            f"{os.getcwd()}); pass an experiment such as "
                            "experiments/ddpm/digits.py")


def parse(flag_values: flags.FlagValues, argv: list[str]) -> list[str]:
  """absl's parsing, with its errors reported as a jgen error is (absl: a two-line message and
  exit status 1): a flag error, a jgen error raised by the config file's `get_config` (which
  absl would wrap into a flag error), and an override of a field the config lacks
  (ml_collections raises a bare KeyError)."""
  missing = _missing_config_file(argv)
  if missing:
    raise SystemExit(errors.report(missing))
  try:
    return flag_values(argv)
  except flags.Error as e:
    cause, jgen_error = e.__context__, None
    while cause is not None:  # ml_collections re-raises it as a copy holding the traceback
      jgen_error = cause if isinstance(cause, errors.JgenError) else jgen_error
      cause = cause.__context__
    raise SystemExit(errors.report(jgen_error or e)) from None
  except (AttributeError, KeyError) as e:
    if not any(a.startswith("--config.") for a in argv[1:]):
      raise
    detail = e.args[0] if e.args else e
    if isinstance(detail, KeyError):  # AttributeError(KeyError(message))
      detail = detail.args[0] if detail.args else detail
    error = errors.ConfigError("a --config.<field> override names a field the config does not "
                               f"have: {' '.join(str(detail).split())}")
    error.__cause__ = e  # shown by --verbose
    raise SystemExit(errors.report(error)) from e
