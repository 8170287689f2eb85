"""Flow matching (Lipman et al. 2023) with Stable Diffusion 3's logit-normal timesteps on the
bundled digits (16x16): ddpm_digits' U-Net, optimizer and 1,000 steps, a velocity target.

  python launch.py --config experiments/ddpm/flow_matching_digits.py --workdir /tmp/fm_digits
  # fewer steps or a second-order sampler:
  python launch.py --config experiments/ddpm/flow_matching_digits.py --workdir /tmp/fm_digits \
      --mode=sample --config.sample.steps=8 --config.sample.sampler=ode_heun

Variants: `:cond` (10 classes, classifier-free guidance on the velocity, w = 2), `:smoke` (a
seconds-long run used by the tests). Trains on 2 CPU cores in a few minutes.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(cond=False, smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.flow_matching(_base.digits(smoke=a.smoke))
  if a.cond:
    c.model.num_classes = 10
    c.sample.guidance_scale = 2.0
    c.sample.num = 100
    c.sample.batch_size = 100
    if a.smoke:
      c.sample.num = c.sample.batch_size = 10
  return c
