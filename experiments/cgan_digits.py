"""Class-conditional GAN on 16x16 digits: label embedding in G, projection discriminator.

  python launch.py --config experiments/cgan_digits.py --workdir /tmp/cgan_digits
  python launch.py --config experiments/cgan_digits.py --workdir /tmp/cgan_digits --mode=sample

Samples come in rows of classes 0..9 (100 samples, 10 per row). Variants: `:concat` (one-hot
label planes concatenated to D's input instead of projection), `:smoke`.
"""

import ml_collections

from jgen.train.config import experiment_module

_base = experiment_module("base_gan", beside=__file__)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = _base.digits_config("cgan", smoke=arg == "smoke")
  if arg == "concat":
    c.model.conditioning = "concat"
  elif arg not in (None, "smoke"):
    raise ValueError(f"unknown variant {arg!r} of cgan_digits; use 'concat' or 'smoke'")
  return c
