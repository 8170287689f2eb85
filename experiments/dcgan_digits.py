"""DCGAN on scikit-learn's 8x8 digits resized to 16x16 (non-saturating GAN loss).

  python launch.py --config experiments/dcgan_digits.py --workdir /tmp/dcgan_digits
  python launch.py --config experiments/dcgan_digits.py --workdir /tmp/dcgan_digits --mode=sample

`--mode=sample` writes a grid and an .npz of samples of the EMA generator. Variants: the loss
(`:minimax`, `:hinge`, `:least_squares`), `:smoke` (a seconds-long run for the tests).
The data, network and schedule the GAN configs share are in experiments/base_gan.py.
"""

import ml_collections

from jgen.train.config import experiment_module

_base = experiment_module("base_gan", beside=__file__)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = _base.digits_config("dcgan", smoke=arg == "smoke")
  if arg in ("minimax", "hinge", "least_squares"):
    c.gan.loss = arg
  elif arg not in (None, "smoke"):
    raise ValueError(f"unknown variant {arg!r} of dcgan_digits; use 'minimax', 'hinge', "
                     "'least_squares' or 'smoke'")
  return c
