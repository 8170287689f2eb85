"""Entry point behind launch.py: process setup, then the mode's function in jgen.train.loop."""

from __future__ import annotations

import logging
import os

import jax

from jgen.train import loop
from jgen.train.config import check_config_keys

MODES = {"train": loop.train, "sample": loop.sample, "eval": loop.evaluate}

# XLA:CPU flags that jgen sets before JAX starts its backends, unless XLA_FLAGS already names
# them. In jaxlib 0.10, XLA:CPU hands convolutions, dots, reductions and element-wise fusions
# to YNNPACK. Its convolutions use 1 of 2 cores for about half of the DDPM U-Net's train step
# (a jax.profiler trace). Eigen's convolutions use both, and YNNPACK keeps the rest: with
# convolutions removed from YNNPACK, the DDPM CIFAR-10 train step at batch 8 on 2 cores took
# 1.11-1.18 s against 1.40 s (min of 5 steps, two alternating rounds). Turning YNNPACK off
# entirely took 1.46-1.52 s, because XLA's own column reductions are about 10x slower.
# `benchmarks/vs_torch.py --nojgen_cpu_flags` gives the comparison.
# Flags that the installed jaxlib does not know abort the process, so the flags are only
# set on the jaxlib releases they were measured on.
CPU_XLA_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "-individual_convolution"}
CPU_XLA_FLAGS_JAXLIB = ((0, 10), (0, 11))  # [from, to) jaxlib (major, minor)


def set_cpu_xla_flags(environ: dict[str, str] | None = None,
                      jaxlib_version: tuple[int, ...] | None = None) -> str:
  """Adds `CPU_XLA_FLAGS` to ``XLA_FLAGS`` (the process environment by default).

  A flag that ``XLA_FLAGS`` already names keeps the user's value. ``JGEN_CPU_XLA_FLAGS=0`` and a
  jaxlib outside `CPU_XLA_FLAGS_JAXLIB` leave ``XLA_FLAGS`` as it is. The flags only take effect
  if this runs before JAX initialises its backends (the first `jax.devices()` or computation);
  launch.py calls it first.

  Returns:
    The resulting ``XLA_FLAGS``.
  """
  env = os.environ if environ is None else environ
  flags = env.get("XLA_FLAGS", "")
  if jaxlib_version is None:
    import jaxlib  # pylint: disable=import-outside-toplevel
    jaxlib_version = tuple(int(v) for v in jaxlib.__version__.split(".")[:2])
  lo, hi = CPU_XLA_FLAGS_JAXLIB
  if env.get("JGEN_CPU_XLA_FLAGS", "1") == "0" or not lo <= tuple(jaxlib_version[:2]) < hi:
    return flags
  for name, value in CPU_XLA_FLAGS.items():
    if f"--{name}=" not in flags:
      flags = f"{flags} --{name}={value}".strip()
  env["XLA_FLAGS"] = flags
  return flags


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
    raise ValueError(f"unknown mode {mode!r}; choose one of {sorted(MODES)}")
  check_config_keys(config)
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
