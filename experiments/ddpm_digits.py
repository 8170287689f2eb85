"""DDPM on scikit-learn's bundled 8x8 digits, resized to 16x16: the CPU quickstart.

  python launch.py --config experiments/ddpm_digits.py --workdir /tmp/ddpm_digits

Trains on 2 CPU cores in a few minutes and writes a grid of recognizable digits to
WORKDIR/samples/. Variant `:smoke` is a seconds-long run used by the tests.
"""

import ml_collections

from jgen.train.config import experiment_module

_base = experiment_module("base_ddpm", beside=__file__)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "smoke"):
    raise ValueError(f"unknown variant {arg!r} of ddpm_digits; use 'smoke'")
  return _base.digits(smoke=arg == "smoke")
