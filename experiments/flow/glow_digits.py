"""Glow on scikit-learn's digits (8x8 resized to 16x16, 1 channel): exact log-likelihood.

  python launch.py --config experiments/flow/glow_digits.py --workdir /tmp/glow_digits
  python launch.py --config experiments/flow/glow_digits.py --workdir /tmp/glow_digits --mode=eval
  python launch.py --config experiments/flow/glow_digits.py --workdir /tmp/glow_digits \
      --mode=sample \
      --config.sample.temperature=1.0

`--mode=eval` prints held-out bits/dim (8-bit data, uniform dequantization, the -log 256 term
included); `--mode=sample` writes a grid and an .npz of samples at `sample.temperature` (0.7).
3,500 steps of the 155k-parameter model (L = 2, K = 8, 64 channels) take about 9 minutes on 2 CPU
cores (0.14 s/step). Variants: `:additive` (additive couplings), `:smoke` (a seconds-long run
for the tests).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False, additive=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.digits(_base.get_config("glow", additive=a.additive), smoke=a.smoke)
  if a.smoke:
    c.model.num_steps = 1
    c.model.hidden = 8
  else:
    c.train.num_steps = 3500
  return c
