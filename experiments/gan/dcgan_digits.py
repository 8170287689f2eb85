"""DCGAN on scikit-learn's 8x8 digits resized to 16x16 (non-saturating GAN loss).

  python launch.py --config experiments/gan/dcgan_digits.py --workdir /tmp/dcgan_digits
  python launch.py --config experiments/gan/dcgan_digits.py --workdir /tmp/dcgan_digits \
      --mode=sample

`--mode=sample` writes a grid and an .npz of samples of the EMA generator. Variants: the loss
(`:loss=minimax`, `:loss=hinge`, `:loss=least_squares`), `:smoke` (a seconds-long run for the
tests). The data, network and schedule the GAN configs share are in experiments/gan/base.py.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)


ARGS = dict(smoke=False, loss=("", "minimax", "hinge", "least_squares"))  # "": the base's


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.digits_config("dcgan", smoke=a.smoke)
  if a.loss:
    c.gan.loss = a.loss
  return c
