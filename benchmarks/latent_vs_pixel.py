"""Train-step throughput of latent versus pixel-space diffusion at the same image size.

  python benchmarks/latent_vs_pixel.py                  # 16x16 (digits) and 32x32
  python benchmarks/latent_vs_pixel.py --sizes=16 --rounds=5 --steps=20

Latent: `diffusion.ldm` with experiments/ldm/digits.py's U-Net (ch 32, ch_mult (1, 2),
cross-attention to 4 label tokens) on the f = 4 latents of
experiments/first_stage/vqgan_digits.py's first stage (16x16 -> 4x4x8; at 32x32 the same first stage
gives 8x8x8), the frozen encoder (and the VQ nearest-code search) inside every step, as in training.
Pixel: `diffusion.ddpm` with experiments/ddpm/digits.py's U-Net (ch 16, ch_mult (1, 2, 4), attention
at 8x8) on the images (16x16x1; 32x32x1). The first stage is randomly initialized (its cost does not
depend on its values). Both steps are jitted with the state donated; the two alternate in one
process (`--rounds` rounds of `--steps` steps each) so that load from other processes hits both
alike; the table gives the median images/s over rounds and the ratio latent / pixel.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jgen import data as jdata  # noqa: E402
from jgen.diffusion import ddpm as ddpm_lib  # noqa: E402
from jgen.diffusion import ldm  # noqa: E402
from jgen.nn.class_token_unet import ClassTokenUNet  # noqa: E402
from jgen.train import load_method  # noqa: E402
from jgen.train.config import experiment_module  # noqa: E402

FLAGS = flags.DEFINE_list("sizes", ["16", "32"], "image sizes")
BATCH = flags.DEFINE_integer("batch", 64, "images per step")
STEPS = flags.DEFINE_integer("steps", 20, "timed steps per round and method")
ROUNDS = flags.DEFINE_integer("rounds", 5, "alternating rounds")

_EXP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")


def _config(name: str, size: int):
  c = experiment_module(name, os.path.join(_EXP, "_")).get_config(None)
  c.data.image_size = size
  return c


def latent_method(size: int) -> ldm.LatentDiffusion:
  """ldm_digits's latent diffusion on a random-init vqgan_digits first stage at `size`."""
  fs_config = _config("first_stage/vqgan_digits", size)
  fs_config.loss.perceptual = "none"  # a training-loss term only: encode/decode are unchanged
  fs = load_method(fs_config)
  x = jnp.zeros((1, size, size, 1))
  ae = jax.jit(lambda r: fs.init(r, {"image": x}).params["autoencoder"])(jax.random.key(0))
  z = jax.eval_shape(fs.encode, ae, x)
  latent_shape = tuple(int(d) for d in z.shape[1:])
  c = _config("ldm/digits", size)
  lc = c.ldm
  unet = dataclasses.replace(ddpm_lib.make_unet(c.model), num_classes=0,
                             context_dim=int(lc.context_dim),
                             cross_attn_heads=int(lc.cross_attn_heads))
  model = ClassTokenUNet(unet=unet, num_classes=int(c.model.num_classes),
                             num_tokens=int(lc.num_tokens))
  with c.unlocked():
    c.data.image_size, c.data.channels = latent_shape[0], latent_shape[2]
  base = ddpm_lib.make_method(c)
  return ldm.LatentDiffusion(first_stage=fs, ddpm=dataclasses.replace(
      base, model=model, image_shape=latent_shape), ae_params=ae,
      image_shape=(size, size, 1))


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _batch(size: int, n: int) -> dict[str, jax.Array]:
  src = jdata.load_source("digits", split="train", image_size=size, channels=1, resize=True)
  return {k: jnp.asarray(v) for k, v in jdata.read_batch(src, range(n)).items()}


def main(argv):
  del argv
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, batch {BATCH.value}, "
        f"{ROUNDS.value} rounds x {STEPS.value} steps per method")
  rows = []
  for size in (int(s) for s in FLAGS.value):
    batch = _batch(size, BATCH.value)
    methods = {"latent": latent_method(size), "pixel": ddpm_lib.make_method(
        _config("ddpm/digits", size))}
    states, steps, info = {}, {}, {}
    for name, m in methods.items():
      states[name] = jax.jit(m.init)(jax.random.key(0), batch)
      steps[name] = jax.jit(m.train_step, donate_argnums=0)
      shape = m.latent_shape if name == "latent" else m.image_shape
      info[name] = (shape, _count(states[name].params))
      states[name], out = steps[name](states[name], batch, jax.random.key(1))  # compile
      jax.block_until_ready(out)
    rates = {name: [] for name in methods}
    for r in range(ROUNDS.value):
      for name in methods:
        t0 = time.perf_counter()
        for i in range(STEPS.value):
          states[name], out = steps[name](states[name], batch, jax.random.key(100 * r + i))
        jax.block_until_ready((states[name].params, out))
        rates[name].append(STEPS.value * BATCH.value / (time.perf_counter() - t0))
    med = {name: float(np.median(v)) for name, v in rates.items()}
    for name in methods:
      shape, params = info[name]
      rows.append((f"{size}x{size}", name, "x".join(map(str, shape)), params, med[name],
                   med[name] / med["pixel"]))
  print("\n| images | diffusion | U-Net input | U-Net params | train images/s | vs pixel |")
  print("|---|---|---|---|---|---|")
  for size, name, shape, params, rate, ratio in rows:
    print(f"| {size} | {name} | {shape} | {params / 1e6:.2f}M | {rate:.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
  app.run(main)
