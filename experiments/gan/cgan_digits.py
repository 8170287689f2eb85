"""Class-conditional GAN on 16x16 digits: label embedding in G, projection discriminator.

  python launch.py --config experiments/gan/cgan_digits.py --workdir /tmp/cgan_digits
  python launch.py --config experiments/gan/cgan_digits.py --workdir /tmp/cgan_digits --mode=sample

Samples come in rows of classes 0..9 (100 samples, 10 per row). Variants: `:concat` (one-hot
label planes concatenated to D's input instead of projection), `:smoke`.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)


ARGS = dict(smoke=False, concat=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.digits_config("cgan", smoke=a.smoke)
  if a.concat:
    c.model.conditioning = "concat"
  return c
