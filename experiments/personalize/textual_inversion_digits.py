"""Textual inversion of the class-conditional digits DDPM on four MNIST 7s
(`diffusion.textual_inversion`): only the identifier's embedding trains.

  python launch.py --config experiments/ddpm/cond_digits.py --workdir /tmp/ddpm_cond_digits
  python launch.py --config experiments/personalize/textual_inversion_digits.py \
      --workdir /tmp/ti_digits \
      --config.init_from.workdir=/tmp/ddpm_cond_digits
  python launch.py --config experiments/personalize/textual_inversion_digits.py \
      --workdir /tmp/ti_digits \
      --config.init_from.workdir=/tmp/ddpm_cond_digits --mode=sample   # [V] (label 10)

The embedding (64 numbers: the offset of label 10's row from the row of 7) trains with Adam at
5e-3 for 400 steps (the paper's 5e-3 base rate); there is no prior term. `:smoke` is seconds.
"""

import ml_collections

from jgen.diffusion.personalize import TEXTUAL_INVERSION_RULES
from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.config("diffusion.textual_inversion", smoke=a.smoke)
  c.personalize.prior_weight = 0.0
  c.optim.rules = TEXTUAL_INVERSION_RULES
  c.optim.lr = 5e-3
  c.optim.grad_clip_norm = 0.0
  c.train.num_steps = 4 if a.smoke else 400
  c.train.checkpoint_every = c.train.num_steps
  return c
