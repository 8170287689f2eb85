"""Rectified flow (Liu et al. 2023) on the bundled digits (16x16): uniform t on the straight
path, ddpm_digits' U-Net and steps; then a reflow stage that straightens it.

  # 1-rectified flow:
  python launch.py --config experiments/ddpm/rectified_flow_digits.py --workdir /tmp/rf1
  # 2-rectified flow: 2,000 couples (z, ODE(z)) drawn by rf1 with 50 Euler steps, cached in
  # /tmp/rf2/reflow, then 1,000 steps from rf1's weights on them:
  python launch.py --config experiments/ddpm/rectified_flow_digits.py:reflow --workdir /tmp/rf2 \
      --config.init_from.workdir=/tmp/rf1

Variants: `:reflow` (the second stage), `:smoke` (seconds-long runs used by the tests).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(reflow=False, smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.flow_matching(_base.digits(smoke=a.smoke), time_distribution="uniform")
  if a.reflow:
    c.flow_matching.reflow.pairs = 16 if a.smoke else 2000
    c.sample.steps = 2 if a.smoke else 50  # the sampler that draws the couples (and samples)
  return c
