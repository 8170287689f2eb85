"""Launches a jgen experiment: flags only, everything else lives in jgen.run.

  python launch.py --config experiments/ddpm/digits.py --workdir /tmp/run
  python launch.py --config experiments/ddpm/cifar.py --workdir /tmp/cifar \
      --config.data.source=folder:../shared/data/cifar10-jpeg.zip
  python launch.py --config experiments/ddpm/digits.py --workdir /tmp/run --mode=sample \
      --config.sample.sampler=ddpm
"""

from absl import app, flags, logging
from ml_collections import config_flags

import jgen.run
import jgen.xla
from jgen import errors
from jgen.cli import flags as cli_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. experiments/ddpm/digits.py[:smoke]; "
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
    app.run(main, flags_parser=lambda argv: cli_flags.parse(FLAGS, argv))
