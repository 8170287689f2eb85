"""Splits the DDPM U-Net train step's time: gradient with and without dropout, per dropout
bit generator, and the optimizer update (Adam + global-norm clipping).

  python benchmarks/unet_profile.py                          # the CIFAR-10 U-Net, batch 8
  python benchmarks/unet_profile.py --batch 64 --calls 2
  python benchmarks/unet_profile.py --trace /tmp/unet_trace  # + a jax.profiler trace of one grad
  python benchmarks/unet_profile.py --trace /tmp/t --jgen_cpu_flags   # with launch.py's CPU flags

Each row is the median seconds of `--calls` jitted calls after a warm-up; the gradient is of the
eps-MSE of `jgen.nn.unet.UNet` (ch 128, ch_mult (1, 2, 2, 2), attention at 16, dropout 0.1) on
random 32x32x3 inputs. The dropout rows draw the masks from a 'threefry' key (JAX's default) or
an 'unsafe_rbg' key (XLA's RngBitGenerator), `jgen.diffusion.ddpm.DDPM.dropout_prng`'s choices.

With `--trace`, XLA:CPU also records one event per executed operation; the script reads the
trace back and prints how much of the traced gradient's span 0, 1 or 2+ worker threads were
running an operation (the idle-core share that led to `jgen.xla.CPU_XLA_FLAGS`) and the operations
that take most thread time. Eigen's convolutions (under `--jgen_cpu_flags`) record only part of
their work as events, so there the busy shares understate the real use.
"""

from __future__ import annotations

import collections
import glob
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from jgen.nn.unet import UNet

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 8, "Batch size.")
flags.DEFINE_integer("calls", 3, "Timed calls per row.")
flags.DEFINE_string("trace", None, "Write a jax.profiler trace of one threefry gradient here.")
flags.DEFINE_bool("jgen_cpu_flags", False, "Set jgen.xla.CPU_XLA_FLAGS first, as launch.py does.")


def _seconds(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(FLAGS.calls):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _busy_threads(trace_dir: str, top: int = 8) -> None:
  """Prints the share of the trace's span with 0, 1 and 2+ XLA worker threads busy."""
  from jax._src.lib import _profile_data  # pylint: disable=import-outside-toplevel
  path = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]
  events, per_op = [], collections.Counter()
  for plane in _profile_data.ProfileData.from_file(path).planes:
    for line in plane.lines:
      if not line.name.startswith("tf_XLAEigen"):
        continue
      for ev in line.events:
        if ev.name.startswith(("ThunkExecutor", "SlinkyThreadPool::Await")):
          continue  # the executor's own spans and waits
        events.append((ev.start_ns, ev.end_ns, line.name))
        if not ev.name.startswith("ThreadpoolListener"):  # Eigen's tasks (its convolutions)
          per_op[ev.name] += ev.duration_ns
  start, end = min(e[0] for e in events), max(e[1] for e in events)
  res = 50_000  # ns per bin
  busy = {name: np.zeros(int((end - start) // res) + 1, bool) for _, _, name in events}
  for s0, s1, name in events:
    busy[name][int((s0 - start) // res):int((s1 - start) // res) + 1] = True
  count = sum(b.astype(int) for b in busy.values())
  print(f"\ntrace {path}: {len(busy)} worker threads over {(end - start) / 1e9:.2f} s; share of "
        f"the span with 0 / 1 / 2+ busy: {np.mean(count == 0):.2f} / {np.mean(count == 1):.2f} "
        f"/ {np.mean(count >= 2):.2f}")
  print("| operation | thread ms |\n|---|---|")
  for name, ns in per_op.most_common(top):
    print(f"| {name} | {ns / 1e6:.1f} |")


def main(argv):
  del argv
  if FLAGS.jgen_cpu_flags:
    from jgen.xla import set_cpu_xla_flags  # pylint: disable=import-outside-toplevel
    set_cpu_xla_flags()
  if FLAGS.trace:  # per-operation trace events; must be set before the backend starts
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_enable_xprof_traceme=true").strip()
  model = UNet(dropout=0.1)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((FLAGS.batch, 32, 32, 3)), jnp.float32)
  t = jnp.asarray(rng.integers(0, 1000, (FLAGS.batch,)), jnp.int32)
  params = jax.jit(lambda: model.init({"params": jax.random.key(0)}, x[:1], t[:1],
                                      train=False)["params"])()

  def loss(p, key):
    rngs = None if key is None else {"dropout": key}
    out = model.apply({"params": p}, x, t, train=key is not None, rngs=rngs)
    return jnp.mean((out - x) ** 2)

  grad = jax.jit(jax.grad(loss))
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(2e-4))
  opt_state = tx.init(params)

  @jax.jit
  def update(p, s, g):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  threefry = jax.random.key(1)
  rbg = jax.random.wrap_key_data(jax.random.bits(threefry, (4,), jnp.uint32), impl="unsafe_rbg")
  rows = [("gradient, no dropout", _seconds(grad, params, None)),
          ("gradient, threefry dropout", _seconds(grad, params, threefry)),
          ("gradient, unsafe_rbg dropout", _seconds(grad, params, rbg)),
          ("Adam + clip update", _seconds(update, params, opt_state, grad(params, None)))]
  if FLAGS.trace:
    with jax.profiler.trace(FLAGS.trace):
      jax.block_until_ready(grad(params, threefry))
    _busy_threads(FLAGS.trace)
  print(f"\nDDPM CIFAR-10 U-Net, batch {FLAGS.batch}, {jax.devices()[0].device_kind}, "
        f"median of {FLAGS.calls}")
  print("| what | s/call |\n|---|---|")
  for what, s in rows:
    print(f"| {what} | {s:.3f} |")


if __name__ == "__main__":
  app.run(main)
