"""VQ-VAE on digits (16x16): a 4x4 map of codes from a codebook of 128 16-d vectors.

  python launch.py --config experiments/vqvae_digits.py --workdir /tmp/vqvae_digits
  python launch.py --config experiments/vqvae_digits.py --workdir /tmp/vqvae_digits --mode=eval

EMA codebook updates (decay 0.99, Laplace smoothing) with commitment beta = 0.25 and dead-code
restarts every 100 steps; variant `:grad` learns the codebook by its loss instead. `--mode=eval`
reports reconstruction MSE/PSNR and the codebook perplexity; `--mode=sample` writes held-out
digits next to their reconstructions. `:smoke` is the tests' seconds-long run.
"""

import ml_collections

from jgen.train.config import experiment_module

_ae = experiment_module("ae_digits", __file__)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = _ae.autoencoder_base("smoke" if arg == "smoke" else None)
  c.method = "autoencoder.vqvae"
  c.model.spatial = True
  c.vq = ml_collections.ConfigDict()
  c.vq.num_codes = 128
  c.vq.code_dim = 16
  c.vq.beta = 0.25
  c.vq.ema = arg != "grad"
  c.vq.decay = 0.99
  c.vq.epsilon = 1e-5
  c.vq.restart_every = 100
  c.vq.restart_threshold = 0.03
  if arg == "smoke":
    c.vq.num_codes = 16
    c.vq.code_dim = 4
    c.vq.restart_every = 2
  elif arg not in (None, "grad"):
    raise ValueError(f"unknown variant {arg!r} of vqvae_digits; use 'grad' or 'smoke'")
  return c
