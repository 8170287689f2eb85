"""Times a 3x3 / 1x1 convolution's forward, input gradient and kernel gradient at the DDPM
CIFAR-10 U-Net's shapes, and two rewrites of the kernel gradient (9 shifted dots; an im2col dot).

  python benchmarks/conv_grads.py                                   # XLA's defaults
  python benchmarks/conv_grads.py --jgen_cpu_flags                  # launch.py's CPU flags
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python benchmarks/conv_grads.py  # no YNNPACK

Each cell is the minimum over `--calls` jitted calls, in ms (the minimum, because this shared
machine's noise only ever adds time). Each rewrite's largest deviation from XLA's kernel
gradient, relative to that gradient's largest entry, is printed beside it.
"""

from __future__ import annotations

import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 8, "Batch size.")
flags.DEFINE_integer("calls", 10, "Timed calls per cell.")
flags.DEFINE_bool("jgen_cpu_flags", False, "Set jgen.xla.CPU_XLA_FLAGS first, as launch.py does.")

# (spatial size, in channels, out channels, kernel size) of the U-Net's convolutions.
SHAPES = ((32, 128, 128, 3), (32, 384, 128, 3), (16, 256, 256, 3), (8, 256, 256, 3),
          (32, 128, 256, 1))


def main(argv):
  del argv
  if FLAGS.jgen_cpu_flags:
    from jgen.xla import set_cpu_xla_flags  # pylint: disable=import-outside-toplevel
    set_cpu_xla_flags()
  import os  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  def ms(fn, *args) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(FLAGS.calls):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      best = min(best, time.perf_counter() - t0)
    return 1e3 * best

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def taps(x, k):
    """The k*k shifted views of the zero-padded input, each [B, H, W, C]."""
    p, (h, w) = k // 2, x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    return [xp[:, i:i + h, j:j + w] for i in range(k) for j in range(k)]

  def kernel_grad_shifted(x, dy, k):
    """dK[i, j] = sum_{b,h,w} x_pad[b, h+i, w+j]^T dy[b, h, w]: one dot per tap."""
    g = jnp.stack([jnp.einsum("bhwc,bhwd->cd", t, dy) for t in taps(x, k)])
    return g.reshape(k, k, x.shape[-1], dy.shape[-1])

  def kernel_grad_im2col(x, dy, k):
    """The same as one dot of the [B, H, W, k*k, C] patches with dy."""
    patches = jnp.stack(taps(x, k), axis=3)
    return jnp.einsum("bhwkc,bhwd->kcd", patches, dy).reshape(k, k, x.shape[-1], -1)

  print(f"\nconv gradients, batch {FLAGS.batch}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
        f"min of {FLAGS.calls} calls, ms")
  print("| conv | forward | input grad | kernel grad | 9 shifted dots | im2col dot |")
  print("|---|---|---|---|---|---|")
  rng = np.random.default_rng(0)
  for size, cin, cout, k in SHAPES:
    x = jnp.asarray(rng.standard_normal((FLAGS.batch, size, size, cin)), jnp.float32)
    w = jnp.asarray(0.05 * rng.standard_normal((k, k, cin, cout)), jnp.float32)
    dy = jnp.asarray(rng.standard_normal((FLAGS.batch, size, size, cout)), jnp.float32)
    fwd = jax.jit(conv)
    dx = jax.jit(lambda x, w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0])
    dw = jax.jit(lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0])
    shifted = jax.jit(lambda x, dy, k=k: kernel_grad_shifted(x, dy, k))
    im2col = jax.jit(lambda x, dy, k=k: kernel_grad_im2col(x, dy, k))
    ref = np.asarray(dw(x, w, dy))
    scale = np.abs(ref).max()

    def dev(fn):
      return np.abs(np.asarray(fn(x, dy)) - ref).max() / scale

    print(f"| {k}x{k} {size}x{size} {cin}->{cout} | {ms(fwd, x, w):.1f} | {ms(dx, x, w, dy):.1f} "
          f"| {ms(dw, x, w, dy):.1f} | {ms(shifted, x, dy):.1f} (dev {dev(shifted):.0e}) "
          f"| {ms(im2col, x, dy):.1f} (dev {dev(im2col):.0e}) |")


if __name__ == "__main__":
  app.run(main)
