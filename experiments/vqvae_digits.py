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

_base = experiment_module("base_autoencoder", beside=__file__)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "smoke", "grad"):
    raise ValueError(f"unknown variant {arg!r} of vqvae_digits; use 'grad' or 'smoke'")
  c = _base.digits(_base.get_config("vqvae", arg), smoke=arg == "smoke")
  if arg == "smoke":
    c.vq.num_codes = 16
    c.vq.code_dim = 4
    c.vq.restart_every = 2
  return c
