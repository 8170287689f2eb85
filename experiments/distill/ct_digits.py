"""Improved consistency training (Song & Dhariwal 2023) on the bundled digits, from scratch.

  python launch.py --config experiments/distill/ct_digits.py --workdir /tmp/ct_digits
  python launch.py --config experiments/distill/ct_digits.py --workdir /tmp/ct_digits \
      --mode=sample --config.sample.steps=2

No teacher, no target EMA (the target is the stop-gradient online network at the next lower
level, same noise), pseudo-Huber loss with c = 0.00054 sqrt(256), the curriculum N(k) = min(10
2^floor(k/K'), 1280) + 1 with K' = floor(K / 8) for this run's K steps, lognormal level sampling
(P_mean -1.1, P_std 2.0) and the 1 / (sigma_i - sigma_{i+1}) weighting; sigma_data 0.5,
c_noise = 250 ln sigma; the quickstart ddpm_digits U-Net (ch 16, ch_mult (1, 2, 4)).
``:smoke`` is the tests' seconds-long run.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base_consistency", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke = a.smoke
  c = _base.digits("ct", smoke=smoke)
  c.optim.lr = 5e-4
  if not smoke:
    c.optim.warmup_steps = 100
    c.optim.schedule = "constant"
    c.train.num_steps = 2500
    c.train.checkpoint_every = 1000
  return c
