"""XLA flags that jgen's command lines set before JAX starts its backends."""

from __future__ import annotations

import os

# XLA:CPU flags that jgen sets before JAX starts its backends, unless XLA_FLAGS already names
# them. In jaxlib 0.10, XLA:CPU hands convolutions, dots, reductions and element-wise fusions
# to YNNPACK. Its convolutions use 1 of 2 cores for about half of the DDPM U-Net's train step
# (a jax.profiler trace). Eigen's convolutions use both, and YNNPACK keeps the rest: with
# convolutions removed from YNNPACK, the DDPM CIFAR-10 train step at batch 8 on 2 cores took
# 1.11-1.18 s against 1.40 s (min of 5 steps, two alternating rounds). Turning YNNPACK off
# entirely took 1.46-1.52 s, because XLA's own column reductions are about 10x slower.
# `benchmarks/vs_torch.py --nojgen_cpu_flags` gives the comparison. YNNPACK's convolutions
# were also the FID extraction's system time: `python -m jgen.metrics.fid` on 2 x 600 CIFAR-10
# JPEGs took 65.5 s wall, 10.4 s system with these flags, against 268.7 s wall, 219.3 s system
# without them (JGEN_CPU_XLA_FLAGS=0). launch.py and the
# `python -m jgen.metrics.fid` / `jgen.metrics.domain` command lines set them.
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
    import jaxlib  # noqa: PLC0415 (only when no version is passed)
    jaxlib_version = tuple(int(v) for v in jaxlib.__version__.split(".")[:2])
  lo, hi = CPU_XLA_FLAGS_JAXLIB
  if env.get("JGEN_CPU_XLA_FLAGS", "1") == "0" or not lo <= tuple(jaxlib_version[:2]) < hi:
    return flags
  for name, value in CPU_XLA_FLAGS.items():
    if f"--{name}=" not in flags:
      flags = f"{flags} --{name}={value}".strip()
  env["XLA_FLAGS"] = flags
  return flags
