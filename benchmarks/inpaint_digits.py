"""Masked-region PSNR of latent-diffusion inpainting on held-out digits, against mean fills.

  python benchmarks/inpaint_digits.py --workdir /tmp/ldm_inpaint \
      [--config experiments/ldm/inpaint_digits.py] [--num 297] [--seed 0]

Takes the held-out split's derived ``mask:box`` pairs (the config's data source and seed: one
box of H/4..H/2 per side per digit), inpaints them with the run's latest checkpoint and prints,
per method, the PSNR over the masked pixels (per image: 10 log10(1 / MSE) on [0, 1] images over
its masked pixels, then the mean over images) and over the unmasked pixels:

* ``ldm`` : the sampled image (inside the mask pasting changes nothing);
* ``ldm, not pasted``: the decoded image D(z) everywhere (unmasked pixels not pasted back);
* ``mean image``: the mask filled with the per-pixel mean of the training images;
* ``global mean``: the mask filled with the mean pixel value of the training images;
* ``first stage D(E(x))``: the autoencoder's reconstruction of the unmasked original (what the
  decoder can do with every pixel known): the reference of the unmasked-pixel check, which
  asks that the not-pasted samples keep the unmasked pixels within the reconstruction error
  (their MSE at most ``--tolerance`` times the reconstruction's on the same pixels), over the
  pixels of the latent cells the mask does not touch; the exit status is 1 when it fails.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jgen import data as jdata  # noqa: E402
from jgen.train import inference  # noqa: E402
from jgen.train.config import experiment_module  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKDIR = flags.DEFINE_string("workdir", None, "an experiments/ldm/inpaint_digits.py run")
CONFIG = flags.DEFINE_string("config", os.path.join(_ROOT, "experiments", "ldm",
                                                    "inpaint_digits.py"), "its config")
NUM = flags.DEFINE_integer("num", 297, "held-out digits (297: the whole test split)")
SEED = flags.DEFINE_integer("seed", 0, "sampling key")
CHUNK = flags.DEFINE_integer("chunk", 100, "images per jitted call")
TOL = flags.DEFINE_float("tolerance", 1.5, "unmasked-pixel check: MSE ratio allowed")


def region_psnr(x: np.ndarray, ref: np.ndarray, region: np.ndarray) -> float:
  """Mean over images of 10 log10(1 / MSE) over `region` pixels, images in [-1, 1]."""
  err = ((np.clip(x, -1, 1) - ref) / 2.0) ** 2 * region
  mse = err.reshape(len(x), -1).sum(1) / np.maximum(region.reshape(len(x), -1).sum(1), 1)
  return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-10))))


def region_mse(x: np.ndarray, ref: np.ndarray, region: np.ndarray) -> float:
  return float(((np.clip(x, -1, 1) - ref) ** 2 * region).sum() / region.sum())


def main(argv):
  del argv
  config = experiment_module(os.path.basename(CONFIG.value)[:-3], CONFIG.value).get_config(None)
  config.init_from.workdir = None  # the frozen first stage comes from the checkpoint
  method, _, state = inference.restore_for_inference(_with_fs(config), WORKDIR.value)
  d = config.data
  src = jdata.load_source(d.source, split=d.eval_split, image_size=d.image_size,
                          channels=d.channels, resize=d.resize, seed=config.seed)
  n = min(NUM.value, len(src))
  batch = jdata.read_batch(src, range(n))
  x, mask = batch["target"], batch["mask"]
  train = jdata.load_source("digits", split=d.split, image_size=d.image_size,
                            channels=d.channels, resize=d.resize)
  train_images = jdata.read_batch(train, range(len(train)))["image"]
  mean_image, global_mean = train_images.mean(0), float(train_images.mean())

  inpaint = jax.jit(method.inpaint)
  recon = jax.jit(lambda s, im: method.latent.decode_latents(
      s.frozen, s.model_state, method.latent.latents(s.frozen, s.model_state, im)))
  pasted, decoded, rec = [], [], []
  for i in range(0, n, CHUNK.value):
    xi, mi = x[i:i + CHUNK.value], mask[i:i + CHUNK.value]
    k = len(xi)
    if k < CHUNK.value:  # pad: one program for every chunk
      xi = np.concatenate([xi, np.zeros((CHUNK.value - k, *xi.shape[1:]), xi.dtype)])
      mi = np.concatenate([mi, np.zeros((CHUNK.value - k, *mi.shape[1:]), mi.dtype)])
    p, dd = inpaint(state, jax.random.fold_in(jax.random.key(SEED.value), i),
                    jnp.asarray(xi), jnp.asarray(mi))
    pasted.append(np.asarray(p)[:k])
    decoded.append(np.asarray(dd)[:k])
    rec.append(np.asarray(recon(state, jnp.asarray(xi)))[:k])
  pasted, decoded, rec = map(np.concatenate, (pasted, decoded, rec))
  masked = np.broadcast_to(mask, x.shape)
  known = 1.0 - masked
  fills = {"ldm": pasted, "ldm, not pasted": decoded,
           "mean image": masked * mean_image + known * x,
           "global mean": masked * global_mean + known * x,
           "first stage D(E(x))": rec}
  print(f"step {int(state.step)}, {n} held-out digits {d.image_size}x{d.image_size}, "
        f"derived mask:box (mean masked fraction {float(masked.mean()):.3f}), "
        f"{method.sample_tag}")
  print("\n| method | masked-region PSNR (dB) | unmasked PSNR (dB) | unmasked MSE |")
  print("|---|---|---|---|")
  for name, out in fills.items():
    print(f"| {name} | {region_psnr(out, x, masked):.2f} | {region_psnr(out, x, known):.2f} | "
          f"{region_mse(out, x, known):.5f} |")
  # Pixels of latent cells the mask does not touch (each f x f cell is one latent vector; a
  # partly masked cell is regenerated as a whole, so its known pixels change with it).
  r = method.latent_shape[0]
  f = d.image_size // r
  touched = masked.reshape(n, r, f, r, f, -1).max(axis=(2, 4), keepdims=True)
  far = 1.0 - np.broadcast_to(touched, (n, r, f, r, f, masked.shape[-1])).reshape(masked.shape)
  print(f"\nunmasked pixels of latent cells the mask does not touch ({float(far.mean()):.3f} "
        f"of all): MSE not pasted {region_mse(decoded, x, far):.5f}, first stage "
        f"{region_mse(rec, x, far):.5f}")
  ratio = region_mse(decoded, x, far) / region_mse(rec, x, far)
  ok = ratio <= TOL.value
  print(f"unmasked-pixel check (not pasted, untouched cells): MSE {ratio:.2f}x the first "
        f"stage's reconstruction MSE on the same pixels, tolerance {TOL.value}x: "
        f"{'PASS' if ok else 'FAIL'}; pasted: exact ("
        f"max |diff| {float(np.abs(pasted - x)[known > 0].max()):.1e})")
  sys.exit(0 if ok else 1)


def _with_fs(config):
  """The config with the first stage's workdir recorded in the run (its run record)."""
  from jgen.train import run_record  # pylint: disable=import-outside-toplevel
  recorded = run_record.latest_config(WORKDIR.value)
  config.init_from.workdir = recorded.init_from.workdir
  return config


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
