"""VAE on scikit-learn's digits (16x16, dynamically binarized, Bernoulli decoder).

  python launch.py --config experiments/autoencoder/vae_digits.py --workdir /tmp/vae_digits
  python launch.py --config experiments/autoencoder/vae_digits.py --workdir /tmp/vae_digits \
      --mode=eval
  python launch.py --config experiments/autoencoder/vae_digits.py --workdir /tmp/vae_digits \
      --mode=sample

`--mode=eval` reports the ELBO, its terms, bits/dim and the IWAE (k = 100) log-likelihood in
nats per image on held-out binarized digits; `--mode=sample` decodes prior samples. Variants:
`:likelihood=logistic` (discretized logistic decoder on 8-bit images), `:likelihood=gaussian`,
`:smoke`.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False, likelihood=("bernoulli", "logistic", "gaussian"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.digits(_base.get_config("vae", a.likelihood), smoke=a.smoke)
  if a.smoke:
    c.vae.kl_warmup_steps = 2
    c.vae.iwae_k = 3
  else:
    c.train.num_steps = 2000
    c.train.checkpoint_every = 2000
  return c
