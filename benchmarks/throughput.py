"""Prints train images/s, sampling images/s (DDPM ancestral and DDIM) and compile times.

  python benchmarks/throughput.py --config experiments/ddpm/digits.py
  python benchmarks/throughput.py --config experiments/ddpm/cifar.py --batch 16 --train_steps 3 \
      --sample_batch 8 --samplers ddim

Times the jitted, donated train step of the one loop (`method.train_step` on a device-resident
batch, state replicated over the mesh) and the one-jit sampling chains, after compiling each
ahead of time; compile time is reported separately. The data pipeline is not timed. Any
method's config works (`experiments/flow/glow_digits.py` ...): only the sampler fields its config
has are set.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from jgen.train import batch_sharding, load_method, make_mesh, replicated

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=False)
flags.DEFINE_integer("batch", None, "Global train batch (default: the config's).")
flags.DEFINE_integer("train_steps", 10, "Timed train steps.")
flags.DEFINE_integer("sample_batch", None, "Images per sampler call (default: config's).")
flags.DEFINE_list("samplers", ["ddpm", "ddim"],
                  "Samplers to time: ddpm, ddim (configs with a sample.sampler field; other "
                  "methods time their one sampler).")
flags.DEFINE_integer("ddim_steps", 50, "DDIM steps.")
flags.mark_flags_as_required(["config"])


def _timed(fn, *args):
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - t0


def _compile(jitted, *args):
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - t0


def bench_train(config, mesh, batch_size, steps):
  method = load_method(config)
  d = config.data
  x = jax.random.uniform(jax.random.key(0), (batch_size, d.image_size, d.image_size, d.channels),
                         minval=-1.0, maxval=1.0)
  batch = {"image": jax.device_put(x, batch_sharding(mesh)),
           "label": jax.device_put(jnp.zeros((batch_size,), jnp.int32), batch_sharding(mesh))}
  state = jax.jit(method.init, out_shardings=replicated(mesh))(jax.random.key(0), batch)
  step = jax.jit(lambda s, b: method.train_step(s, b, s.step_rng()), donate_argnums=0,
                 out_shardings=(replicated(mesh), replicated(mesh)))
  compiled, compile_s = _compile(step, state, batch)
  (state, _), _ = _timed(compiled, state, batch)  # warm-up
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  seconds = time.perf_counter() - t0
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
  return method, state, {"what": f"train step (batch {batch_size})", "compile_s": compile_s,
                         "images_per_s": batch_size * steps / seconds,
                         "s_per_call": seconds / steps}, n_params


def sampler_overrides(config, sampler: str | None) -> dict[str, object]:
  """The `config.sample` fields to set for `sampler`: only fields the method's config has
  (a DDPM config has `sampler` and `steps`; a flow or a GAN has neither)."""
  wanted = {"sampler": sampler, "steps": FLAGS.ddim_steps} if sampler is not None else {}
  return {k: v for k, v in wanted.items() if k in config.sample}


def bench_sampler(config, mesh, state, sampler, n):
  config = config.copy_and_resolve_references()
  config.sample.update(sampler_overrides(config, sampler))
  method = load_method(config)
  fn = jax.jit(method.sample, static_argnums=2, out_shardings=replicated(mesh))
  compiled, compile_s = _compile(fn, state, jax.random.key(1), n)
  _timed(compiled, state, jax.random.key(1))  # warm-up
  _, seconds = _timed(compiled, state, jax.random.key(2))
  return {"what": f"sample {method.sample_tag} (batch {n})", "compile_s": compile_s,
          "images_per_s": n / seconds, "s_per_call": seconds}


def main(argv):
  del argv
  config = FLAGS.config
  mesh = make_mesh()
  batch_size = FLAGS.batch or config.data.batch_size
  sample_n = FLAGS.sample_batch or config.sample.batch_size
  _, state, train_row, n_params = bench_train(config, mesh, batch_size, FLAGS.train_steps)
  samplers = FLAGS.samplers if "sampler" in config.sample else [None]  # the method's own
  rows = [train_row] + [bench_sampler(config, mesh, state, s, sample_n) for s in samplers]
  print(f"\nconfig: {config.method} "
        f"{config.data.image_size}x{config.data.image_size}x{config.data.channels}, "
        f"{n_params / 1e6:.2f}M params, dtype {config.model.dtype}; "
        f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}")
  print(f"| {'what':<42} | {'images/s':>10} | {'s/call':>9} | {'compile s':>9} |")
  print(f"|{'-' * 44}|{'-' * 12}|{'-' * 11}|{'-' * 11}|")
  for r in rows:
    print(f"| {r['what']:<42} | {r['images_per_s']:>10.2f} | {r['s_per_call']:>9.3f} | "
          f"{r['compile_s']:>9.2f} |")


if __name__ == "__main__":
  app.run(main)
