"""WGAN-GP on 16x16 digits: 5 critic steps per generator step, gradient penalty lambda = 10,
Adam(1e-4, b1=0, b2=0.9), a critic with layer norm instead of batch norm (Gulrajani et al. 2017).

  python launch.py --config experiments/gan/wgan_gp_digits.py --workdir /tmp/wgan_gp_digits

The loop's batch is 5 x 64 real images (one 64-image chunk per critic step). Variant `:smoke`.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  return _base.digits_config("wgan_gp", smoke=a.smoke)
