"""VQ-VAE on digits (16x16): a 4x4 map of codes from a codebook of 128 16-d vectors.

  python launch.py --config experiments/autoencoder/vqvae_digits.py --workdir /tmp/vqvae_digits
  python launch.py --config experiments/autoencoder/vqvae_digits.py --workdir /tmp/vqvae_digits \
      --mode=eval

EMA codebook updates (decay 0.99, Laplace smoothing) with commitment beta = 0.25 and dead-code
restarts every 100 steps; variant `:grad` learns the codebook by its loss instead. `--mode=eval`
reports reconstruction MSE/PSNR and the codebook perplexity; `--mode=sample` writes held-out
digits next to their reconstructions. `:smoke` is the tests' seconds-long run.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False, grad=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.digits(_base.get_config("vqvae", "grad" if a.grad else None), smoke=a.smoke)
  if a.smoke:
    c.vq.num_codes = 16
    c.vq.code_dim = 4
    c.vq.restart_every = 2
  return c
