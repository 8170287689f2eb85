"""WGAN with weight clipping on 16x16 digits: 5 critic steps per generator step, clip 0.01,
RMSProp 5e-5 (Arjovsky et al. 2017, Algorithm 1).

  python launch.py --config experiments/gan/wgan_digits.py --workdir /tmp/wgan_digits

The loop's batch is 5 x 64 real images (one 64-image chunk per critic step). Variant `:smoke`.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  return _base.digits_config("wgan", smoke=a.smoke)
