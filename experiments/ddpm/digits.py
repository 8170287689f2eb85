"""DDPM on scikit-learn's bundled 8x8 digits, resized to 16x16: the CPU quickstart.

  python launch.py --config experiments/ddpm/digits.py --workdir /tmp/ddpm_digits

Trains on 2 CPU cores in a few minutes and writes a grid of recognizable digits to
WORKDIR/samples/. Variant `:smoke` is a seconds-long run used by the tests.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.digits(smoke=a.smoke)
  if not a.smoke:
    # The grid of this run: stochastic DDIM (eta 1, 100 steps). After 1,000 steps, deterministic
    # DDIM (eta 0) left about one sample in five as noise at 50 and at 200 steps alike; eta 1
    # gives the cleaner grid in README (`benchmarks/gan_digits.py` scores both there).
    c.sample.eta = 1.0
    c.sample.steps = 100
  return c
