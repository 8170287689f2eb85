"""Denoising autoencoder on digits (16x16): reconstructs clean digits from corrupted ones.

  python launch.py --config experiments/autoencoder/dae_digits.py --workdir /tmp/dae_digits
  python launch.py --config experiments/autoencoder/dae_digits.py --workdir /tmp/dae_digits \
      --mode=eval

Gaussian noise with std 0.5 (on [-1, 1] images) by default; variant `:dropout` masks 30% of the
pixels to black instead. `--mode=sample` writes corrupted held-out inputs next to their
reconstructions. `:smoke` is the tests' seconds-long run.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False, dropout=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.digits(_base.get_config("dae", "dropout" if a.dropout else None), smoke=a.smoke)
  if a.smoke:
    c.train.eval_every = 0  # evaluate() is the AE's, run by ae_digits:smoke
  return c
