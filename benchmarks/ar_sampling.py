"""Autoregressive sampling speed with and without the key/value cache (same model, same keys).

  python benchmarks/ar_sampling.py --run /tmp/vqtf_digits
  python benchmarks/ar_sampling.py --lengths 16,64,256 --width 256 --depth 8

`--run WORKDIR` restores a trained code-transformer run with the config it trained with (its
run record: the VQ run it names must still be there) and times whole images (EMA parameters,
frozen VQ decoder): codes sampled by `sampling.sample_cached` (prefill + one
position per step) or `sampling.sample_uncached` (the whole sequence recomputed at every step),
then decoded. `--lengths` adds rows for randomly initialized transformers of `--width` /
`--depth` over code maps of those lengths (256 = a 16x16 VQ-GAN map), timing the code sampling
alone. Every row checks that both samplers drew the same tokens from the same keys, and reports
the median of `--repeats` jitted calls after a compile-and-warm-up call.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from jgen.autoregressive import sampling
from jgen.nn.transformer import Transformer
from jgen.train import run_record
from jgen.train.inference import restore_for_inference

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("run", [], "Work directory of a code-transformer run.")
flags.DEFINE_string("lengths", "", "Comma-separated code sequence lengths of random models.")
flags.DEFINE_integer("width", 128, "Width of the random models.")
flags.DEFINE_integer("depth", 4, "Blocks of the random models.")
flags.DEFINE_integer("heads", 4, "Heads of the random models.")
flags.DEFINE_integer("vocab", 512, "Codebook size of the random models.")
flags.DEFINE_integer("batch", 100, "Sequences (images) per sampler call.")
flags.DEFINE_integer("repeats", 3, "Timed calls per sampler (median reported).")


def _time(fn, *args) -> tuple[float, float, np.ndarray]:
  """(compile + first call seconds, median seconds per call, output)."""
  t0 = time.perf_counter()
  out = np.asarray(jax.block_until_ready(fn(*args)))
  first = time.perf_counter() - t0
  times = []
  for _ in range(FLAGS.repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times), out


def run_row(workdir: str) -> dict:
  config = run_record.latest_config(workdir)
  method, _, state = restore_for_inference(config, workdir)
  labels = jnp.arange(FLAGS.batch, dtype=jnp.int32) % getattr(method, "num_classes", 1)
  uncached = dataclasses.replace(method, cached=False)

  def images(m):
    def fn(state, rng):
      if hasattr(m, "sample_conditional"):
        return m.sample_conditional(state, rng, {"label": labels}, FLAGS.batch)
      return m.sample(state, rng, FLAGS.batch)
    return jax.jit(fn)

  def codes(m):
    lab = labels if hasattr(m, "num_classes") else None
    return jax.jit(lambda state, rng: m.sample_codes(state.ema_params, rng, FLAGS.batch, lab))

  rng = jax.random.key(0)
  same = np.array_equal(codes(method)(state, rng), codes(uncached)(state, rng))
  c_first, c_sec, _ = _time(images(method), state, rng)
  u_first, u_sec, _ = _time(images(uncached), state, rng)
  return {"model": f"{workdir} (trained, decoded)", "length": method.length, "same": same,
          "cached": FLAGS.batch / c_sec, "uncached": FLAGS.batch / u_sec,
          "compile": (c_first, u_first)}


def random_row(length: int) -> dict:
  model = Transformer(vocab_size=FLAGS.vocab, seq_len=length, width=FLAGS.width,
                      depth=FLAGS.depth, num_heads=FLAGS.heads)
  params = model.init(jax.random.key(0), jnp.zeros((1, length), jnp.int32))
  b = FLAGS.batch

  @jax.jit
  def cached(params, rng):
    prefill = lambda: model.apply(params, b, method=Transformer.prefill)
    decode = lambda t, c, i: model.apply(params, t, c, i, method=Transformer.decode)
    return sampling.sample_cached(prefill, decode, rng, length=length)

  @jax.jit
  def uncached(params, rng):
    return sampling.sample_uncached(lambda t: model.apply(params, t), rng, batch_size=b,
                                    length=length)

  rng = jax.random.key(1)
  c_first, c_sec, c_out = _time(cached, params, rng)
  u_first, u_sec, u_out = _time(uncached, params, rng)
  return {"model": f"random w{FLAGS.width} d{FLAGS.depth} K{FLAGS.vocab} (codes only)",
          "length": length, "same": bool(np.array_equal(c_out, u_out)),
          "cached": b / c_sec, "uncached": b / u_sec, "compile": (c_first, u_first)}


def main(argv):
  del argv
  rows = []
  for workdir in FLAGS.run:
    rows.append(run_row(workdir))
  for length in filter(None, FLAGS.lengths.split(",")):
    rows.append(random_row(int(length)))
  if not rows:
    raise app.UsageError("give --run WORKDIR and/or --lengths 16,64,...")
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s); batch "
        f"{FLAGS.batch}; median of {FLAGS.repeats} calls after a warm-up call")
  print("| model | codes | cached /s | uncached /s | cache speed-up | same tokens | "
        "first call (s) cached / uncached |")
  print("|---|---:|---:|---:|---:|---|---:|")
  for r in rows:
    print(f"| {r['model']} | {r['length']} | {r['cached']:.1f} | {r['uncached']:.1f} | "
          f"{r['cached'] / r['uncached']:.2f}x | {'yes' if r['same'] else 'NO'} | "
          f"{r['compile'][0]:.1f} / {r['compile'][1]:.1f} |")
  if not all(r["same"] for r in rows):
    raise SystemExit("the cached and uncached samplers drew different tokens")


if __name__ == "__main__":
  app.run(main)
