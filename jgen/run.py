"""Entry point behind launch.py: process setup, then the mode's function (training in
`jgen.train.loop`, sampling and evaluation in `jgen.train.inference`)."""

from __future__ import annotations

import logging
import os

import jax

from jgen.errors import ConfigError
from jgen.train import inference, loop
from jgen.train.config import check_config_keys
from jgen.train.validate import validate_config

MODES = {"train": loop.train, "sample": inference.sample, "eval": inference.evaluate}


def enable_compilation_cache(cache_dir: str | None = None) -> str:
  """Turns on JAX's persistent compilation cache so a second launch skips most compiling."""
  cache_dir = cache_dir or os.environ.get(
      "JGEN_COMPILATION_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "jgen", "xla"))
  os.makedirs(cache_dir, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  return cache_dir


def main(config, *, workdir: str, mode: str = "train", distributed: bool = False,
         coordinator_address: str | None = None, num_processes: int | None = None,
         process_id: int | None = None, compilation_cache: bool = True):
  """Runs `mode` ('train', 'sample' or 'eval') of the experiment `config` in `workdir`.

  Args:
    config: the experiment's ConfigDict.
    workdir: where checkpoints, TensorBoard events and sample grids go (local or gs://).
    mode: one of MODES.
    distributed: call `jax.distributed.initialize()` first (multi-host GPU/TPU); each process
      then loads its own share of every global batch. Its preemption service then catches
      SIGTERM and every host saves one agreed step (`jgen.train.preemption`).
    coordinator_address, num_processes, process_id: passed to `jax.distributed.initialize`;
      None lets JAX detect them (Cloud TPU, Slurm, Open MPI, Kubernetes, or the
      JAX_COORDINATOR_ADDRESS variable). Set all three to run processes by hand, e.g. two on
      one machine with a coordinator on 127.0.0.1:PORT.
    compilation_cache: use the persistent compilation cache.
  """
  if mode not in MODES:
    raise ConfigError(f"unknown mode {mode!r}; choose one of {sorted(MODES)}")
  check_config_keys(config)
  validate_config(config)
  if distributed:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  if compilation_cache:
    enable_compilation_cache()
  logging.getLogger("jgen").setLevel(logging.INFO)
  logging.getLogger("jgen").info("jax %s, backend %s, %d device(s), process %d/%d", jax.__version__,
                                 jax.default_backend(), jax.device_count(),
                                 jax.process_index(), jax.process_count())
  return MODES[mode](config, workdir)
