"""EDM (Karras et al. 2022) on the bundled digits (16x16): ddpm_digits' U-Net, optimizer and
1,000 steps with EDM's preconditioning, log-normal sigmas and loss weight, sampled with
Algorithm 2 (18 Heun steps, 35 network evaluations, no churn).

  python launch.py --config experiments/ddpm/edm_digits.py --workdir /tmp/edm_digits
  # stochastic sampling (EDM's ImageNet churn settings):
  python launch.py --config experiments/ddpm/edm_digits.py --workdir /tmp/edm_digits \
      --mode=sample --config.sample.s_churn=40 --config.sample.s_tmin=0.05 \
      --config.sample.s_tmax=50 --config.sample.s_noise=1.003

Variants: `:smoke` (a seconds-long run used by the tests).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.edm(_base.digits(smoke=a.smoke))
  if a.smoke:
    c.sample.steps = 3
  return c
