"""Class-conditional DDPM with classifier-free guidance on the bundled digits (16x16).

  python launch.py --config experiments/ddpm/cond_digits.py --workdir /tmp/ddpm_cond_digits
  # one digit only, stronger guidance, another sampler:
  python launch.py --config experiments/ddpm/cond_digits.py --workdir /tmp/ddpm_cond_digits \
      --mode=sample --config.sample.labels=3 --config.sample.guidance_scale=4 \
      --config.sample.sampler=dpmpp_2m --config.sample.steps=20

ddpm_digits' U-Net, schedule and steps with a 10-class label embedding (plus the null class);
labels are dropped to the null class 10% of the time (Ho & Salimans 2022), and the samples,
every class in turn (row by row 0..9), use guidance scale w = 2 (1 = plain conditional,
0 = unconditional). Trains on 2 CPU cores in a few minutes, like ddpm_digits. Variant `:smoke`
is a seconds-long run used by the tests.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.digits(smoke=a.smoke)
  c.model.num_classes = 10
  c.diffusion.cond_drop_prob = 0.1
  c.sample.guidance_scale = 2.0
  c.sample.num = 100              # a 10x10 grid: each row 0..9
  c.sample.batch_size = 100
  if a.smoke:
    c.train.num_steps = 4
    c.train.checkpoint_every = 4
    c.train.eval_every = 4
    c.sample.num = 10
    c.sample.batch_size = 10
  return c
