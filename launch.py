"""Launches a jgen experiment: flags only, everything else lives in jgen.run.

  python launch.py --config experiments/ddpm_digits.py --workdir /tmp/run
  python launch.py --config experiments/ddpm_cifar.py --workdir /tmp/cifar \
      --config.data.source=folder:../shared/data/cifar10-jpeg.zip
  python launch.py --config experiments/ddpm_digits.py --workdir /tmp/run --mode=sample \
      --config.sample.sampler=ddpm
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

import jgen.run
import jgen.xla
from jgen import errors

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. experiments/ddpm_digits.py[:smoke]; "
    "override fields with --config.optim.lr=1e-4.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events, samples.")
flags.DEFINE_enum("mode", "train", sorted(jgen.run.MODES), "What to do with the experiment.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first (multi-host GPU clusters, TPU pods).")
flags.DEFINE_string("coordinator_address", None,
                    "With --distributed: process 0's host:port (default: detected by JAX).")
flags.DEFINE_integer("num_processes", None, "With --distributed: the number of processes.")
flags.DEFINE_integer("process_id", None, "With --distributed: this process's index.")
flags.DEFINE_bool("compilation_cache", True,
                  "Use JAX's persistent compilation cache (~/.cache/jgen/xla, or "
                  "$JGEN_COMPILATION_CACHE).")
flags.DEFINE_bool("verbose", False, errors.VERBOSE_HELP)
flags.mark_flags_as_required(["config", "workdir"])


def _missing_config_file(argv) -> errors.ConfigError | None:
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
                            "experiments/ddpm_digits.py")


def parse_flags(argv):
  """absl's parsing, with its errors reported as a jgen error is (absl: a two-line message and
  exit status 1): a flag error, a jgen error raised by the config file's `get_config` (which
  absl would wrap into a flag error), and an override of a field the config lacks
  (ml_collections raises a bare KeyError)."""
  missing = _missing_config_file(argv)
  if missing:
    raise SystemExit(errors.report(missing))
  try:
    return FLAGS(argv)
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  jgen.xla.set_cpu_xla_flags()  # before anything starts JAX's backends
  logging.set_verbosity(logging.WARNING)
  with errors.reported(verbose=FLAGS.verbose or None):
    jgen.run.main(FLAGS.config, workdir=FLAGS.workdir, mode=FLAGS.mode,
                  distributed=FLAGS.distributed, coordinator_address=FLAGS.coordinator_address,
                  num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
                  compilation_cache=FLAGS.compilation_cache)


if __name__ == "__main__":
  with errors.reported():  # a jgen error raised while the config file loads
    app.run(main, flags_parser=parse_flags)
