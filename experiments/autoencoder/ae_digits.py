"""Autoencoder on scikit-learn's 8x8 digits resized to 16x16: a 16-d vector bottleneck.

  python launch.py --config experiments/autoencoder/ae_digits.py --workdir /tmp/ae_digits
  python launch.py --config experiments/autoencoder/ae_digits.py --workdir /tmp/ae_digits \
      --mode=eval
  python launch.py --config experiments/autoencoder/ae_digits.py --workdir /tmp/ae_digits \
      --mode=sample

`--mode=sample` writes held-out digits side by side with their reconstructions. Variants:
`:mae` (L1 reconstruction), `:smoke` (a seconds-long run for the tests).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False, mae=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  return _base.digits(_base.get_config("ae", "mae" if a.mae else None), smoke=a.smoke)
