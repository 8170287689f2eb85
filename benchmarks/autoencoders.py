"""Prints the evidence table of trained autoencoders on the whole held-out split.

  python benchmarks/autoencoders.py \
      --run experiments/autoencoder/ae_digits.py=/tmp/ae_digits \
      --run experiments/autoencoder/dae_digits.py=/tmp/dae_digits \
      --run experiments/autoencoder/vae_digits.py=/tmp/vae_digits \
      --run experiments/autoencoder/vqvae_digits.py=/tmp/vqvae_digits

Each `--run CONFIG[:VARIANT]=WORKDIR` restores the latest checkpoint of a run and evaluates the
EMA parameters on every image of `config.data.eval_split` (not the loop's `eval_batches`
sample): reconstruction MSE (on [-1, 1]) and PSNR (dB, on [0, 1]) for AE / DAE (from corrupted
inputs, next to the PSNR of the corrupted inputs themselves) / VQ-VAE; the ELBO and the
k-sample IWAE log-likelihood in nats per image and bits/dim for the VAE (held-out images
binarized once with a fixed seed for a Bernoulli decoder); the VQ-VAE codebook perplexity and
usage over all held-out codes. Parameter counts exclude the VQ statistics.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from jgen.ops import quantizer as vq
from jgen.autoencoder.ae import corrupt
from jgen.ops.image import psnr
from jgen.train.inference import restore_for_inference
from run_specs import load_config
from jgen.train.inputs import load_data

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("run", [], "CONFIG[:VARIANT]=WORKDIR of a trained run.")
flags.DEFINE_integer("chunk", 99, "Held-out images per jitted evaluation call.")
flags.DEFINE_integer("seed", 0, "Seed of corruption, binarization and posterior samples.")
flags.DEFINE_integer("iwae_k", None, "IWAE samples (default: the config's vae.iwae_k).")


def heldout(config) -> np.ndarray:
  source = load_data(config, split=config.data.eval_split)
  images = np.stack([source[i]["image"] for i in range(len(source))]).astype(np.float32)
  return images / 127.5 - 1.0


def num_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def evaluate_run(spec: str, workdir: str) -> dict:
  config = load_config(spec)
  if FLAGS.iwae_k and "vae" in config:
    config.vae.iwae_k = FLAGS.iwae_k
  method, _, state = restore_for_inference(config, workdir)
  images = heldout(config)
  kind = config.method.rsplit(".", 1)[-1]
  params = state.ema_params
  base = jax.random.key(FLAGS.seed)

  @jax.jit
  def chunk_metrics(x, rng):
    if kind == "vae":
      return method.evaluate(state, {"image": x}, rng)
    if kind == "vqvae":
      x_hat, _, q = method.forward(params, x)
      return {"mse": jnp.mean((x_hat - x) ** 2), "psnr": jnp.mean(psnr(x_hat, x)),
              "indices": q.indices}
    noise_rng, _ = jax.random.split(rng)  # the split that method.loss_fn makes
    x_in = corrupt(x, noise_rng, method.corruption, method.corruption_level)
    x_hat = method.reconstruct(params, x_in)
    out = {"mse": jnp.mean((x_hat - x) ** 2), "psnr": jnp.mean(psnr(x_hat, x))}
    if method.corruption != "none":
      out["input_psnr"] = jnp.mean(psnr(x_in, x))
    return out

  totals, indices = {}, []
  for start in range(0, len(images), FLAGS.chunk):
    x = jnp.asarray(images[start:start + FLAGS.chunk])
    m = jax.device_get(chunk_metrics(x, jax.random.fold_in(base, start)))
    if "indices" in m:
      indices.append(m.pop("indices"))
    for k, v in m.items():
      totals[k] = totals.get(k, 0.0) + float(v) * len(x) / len(images)
  if indices:
    perplexity, used = vq.codebook_perplexity(jnp.asarray(np.concatenate(indices)),
                                              method.num_codes)
    totals.update(perplexity=float(perplexity), codes_used=float(used) * method.num_codes,
                  num_codes=method.num_codes)
  return {"run": spec, "method": config.method, "step": int(state.step),
          "params": num_params(state.params), "n": len(images), **totals}


def main(argv):
  del argv
  rows = []
  for run in FLAGS.run:
    spec, _, workdir = run.partition("=")
    rows.append(evaluate_run(spec, workdir))
  print("| run | step | params | held-out | MSE | PSNR dB | input PSNR dB | ELBO nats | "
        "IWAE log p(x) nats (k) | bits/dim (ELBO / IWAE) | perplexity (used / K) |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    f = lambda k, fmt="{:.4f}": fmt.format(r[k]) if k in r else ""
    iwae = (f"{r['iwae_ll']:.2f} ({FLAGS.iwae_k or load_config(r['run']).vae.iwae_k})"
            if "iwae_ll" in r else "")
    bpd = f"{r['bpd']:.4f} / {r['iwae_bpd']:.4f}" if "bpd" in r else ""
    ppl = (f"{r['perplexity']:.1f} ({r['codes_used']:.0f} / {r['num_codes']})"
           if "perplexity" in r else "")
    print(f"| {r['run']} | {r['step']} | {r['params']:,} | {r['n']} | {f('mse')} | "
          f"{f('psnr', '{:.2f}')} | {f('input_psnr', '{:.2f}')} | {f('elbo', '{:.2f}')} | "
          f"{iwae} | {bpd} | {ppl} |")


if __name__ == "__main__":
  app.run(main)
