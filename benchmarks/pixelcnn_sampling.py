"""Prints PixelCNN sampling images/s: the one-jit raster `lax.scan` of
`jgen.autoregressive.pixelcnn`.

  python benchmarks/pixelcnn_sampling.py --config experiments/autoregressive/pixelcnn_digits.py \
      --workdir /tmp/pixelcnn_digits --batch 100
  python benchmarks/pixelcnn_sampling.py --config experiments/autoregressive/pixelcnn_cifar.py \
      --batch 16

With `--workdir` the latest checkpoint's EMA parameters are used; without, a fresh init (the
speed does not depend on the weights). The sampler reruns the whole network once per pixel
(H W forward passes per batch); the table also gives one forward pass's time, so
`per-image time / (H W x forward time per image)` shows what the scan adds over the forward
passes themselves. Compile time is reported separately and not timed in images/s.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from jgen.train import load_method
from jgen.train.inference import restore_for_inference
from jgen.train.method import Conditional

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "A PixelCNN experiment config.",
                                lock_config=False)
flags.DEFINE_string("workdir", "", "A trained run (default: fresh parameters).")
flags.DEFINE_multi_integer("batch", [16], "Images per sampler call (repeatable).")
flags.DEFINE_integer("repeats", 2, "Timed calls per batch size.")
flags.mark_flags_as_required(["config"])


def main(_):
  config = FLAGS.config
  if FLAGS.workdir:
    method, _, state = restore_for_inference(config, FLAGS.workdir)
  else:
    method = load_method(config)
    h, w, c = method.image_shape
    state = method.init(jax.random.key(0), {"image": jnp.zeros((1, h, w, c))})
  h, w, c = method.image_shape
  conditional = isinstance(method, Conditional)
  print(f"{config.method}: {h}x{w}x{c}, "
        f"{sum(x.size for x in jax.tree.leaves(state.params)):,} parameters, "
        f"{'conditional' if conditional else 'unconditional'}, {jax.devices()[0].platform}")
  print("| batch | compile s | s / batch | images/s | forward ms / image | scan overhead |")
  print("|---|---|---|---|---|---|")
  for n in FLAGS.batch:
    labels = jnp.asarray(np.arange(n) % method.num_classes if conditional else np.zeros(n),
                         jnp.int32)
    conds = {"label": labels} if conditional else None
    if conditional:
      fn = jax.jit(lambda s, r, y: method.sample_conditional(s, r, {"label": y}, y.shape[0]))
      args = (state, jax.random.key(1), labels)
    else:
      fn = jax.jit(method.sample, static_argnums=2)
      args = (state, jax.random.key(1), n)
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    t0 = time.perf_counter()
    for i in range(FLAGS.repeats):
      jax.block_until_ready(compiled(state, jax.random.key(2 + i), *args[2:]))
    per_batch = (time.perf_counter() - t0) / FLAGS.repeats
    forward = jax.jit(lambda p, x: method.model.apply({"params": p}, x, conds))
    x = jnp.zeros((n, h, w, c))
    jax.block_until_ready(forward(state.ema_params, x))
    t0 = time.perf_counter()
    for _ in range(5):
      jax.block_until_ready(forward(state.ema_params, x))
    fwd = (time.perf_counter() - t0) / 5
    print(f"| {n} | {compile_s:.1f} | {per_batch:.2f} | {n / per_batch:.1f} | "
          f"{1e3 * fwd / n:.3f} | {per_batch / (h * w * fwd):.2f}x |")


if __name__ == "__main__":
  app.run(main)
