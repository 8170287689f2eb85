"""DreamBooth of the class-conditional digits DDPM on four MNIST 7s (`diffusion.dreambooth`).

  python launch.py --config experiments/ddpm/cond_digits.py --workdir /tmp/ddpm_cond_digits
  python launch.py --config experiments/personalize/dreambooth_digits.py --workdir /tmp/db_digits \
      --config.init_from.workdir=/tmp/ddpm_cond_digits
  python launch.py --config experiments/personalize/dreambooth_digits.py --workdir /tmp/db_digits \
      --config.init_from.workdir=/tmp/ddpm_cond_digits --mode=sample   # [V] 7 (label 10)

Fine-tunes every weight (Adam 1e-4, 800 steps of 4 subject + 4 class images) with prior
preservation lambda = 1 on 100 class images of 7 that the base generates first (cached in
workdir/prior). Variants: `noprior` (lambda = 0: the language drift), `lora` (rank-4 adapters
of every convolution and attention projection, and the identifier), `lora,noprior`, `smoke`.
"""

import ml_collections

from jgen.nn.lora import RULE
from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)
ARGS = dict(smoke=False, noprior=False, lora=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.config("diffusion.dreambooth", smoke=a.smoke)
  c.optim.lr = 1e-4  # 5e-4 learns the subject a little better but ruins the other digits (README)
  c.train.num_steps = 800
  c.train.checkpoint_every = 800
  if a.noprior:
    c.personalize.prior_weight = 0.0
  if a.lora:
    c.lora.rank = 4
    c.lora.targets = r"conv|nin_shortcut|attn.*/(q|k|v|proj_out)$"
    c.optim.rules = ((RULE, 1.0), ("identifier/.*", 1.0), (".*", "frozen"))
    c.optim.lr = 2e-3  # adapters start at B = 0 and need a larger step
  if a.smoke:
    c.train.num_steps = 4
    c.train.checkpoint_every = 4
  return c
