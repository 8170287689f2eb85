"""Splits the DDPM U-Net train step's time: gradient with and without dropout, per dropout
bit generator, and the optimizer update (Adam + global-norm clipping).

  python benchmarks/unet_profile.py                          # the CIFAR-10 U-Net, batch 8
  python benchmarks/unet_profile.py --batch 64 --calls 2
  python benchmarks/unet_profile.py --trace /tmp/unet_trace  # + a jax.profiler trace of one grad

Each row is the median seconds of `--calls` jitted calls after a warm-up; the gradient is of the
eps-MSE of `jgen.nn.unet.UNet` (ch 128, ch_mult (1, 2, 2, 2), attention at 16, dropout 0.1) on
random 32x32x3 inputs. The dropout rows draw the masks from a 'threefry' key (JAX's default) or
an 'unsafe_rbg' key (XLA's RngBitGenerator), `jgen.diffusion.ddpm.DDPM.dropout_prng`'s choices.
"""

from __future__ import annotations

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


def _seconds(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(FLAGS.calls):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main(argv):
  del argv
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
  print(f"\nDDPM CIFAR-10 U-Net, batch {FLAGS.batch}, {jax.devices()[0].device_kind}, "
        f"median of {FLAGS.calls}")
  print("| what | s/call |\n|---|---|")
  for what, s in rows:
    print(f"| {what} | {s:.3f} |")


if __name__ == "__main__":
  app.run(main)
