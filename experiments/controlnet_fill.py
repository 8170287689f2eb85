"""ControlNet on the fill task (Zhang et al. 2023's fill50k, offline, 32x32): outline + colour.

  python launch.py --config experiments/ddpm_cond_fill.py --workdir /tmp/ddpm_cond_fill
  python launch.py --config experiments/controlnet_fill.py --workdir /tmp/controlnet_fill \
      --config.init_from.workdir=/tmp/ddpm_cond_fill
  python launch.py --config experiments/controlnet_fill.py --workdir /tmp/controlnet_fill \
      --config.init_from.workdir=/tmp/ddpm_cond_fill --mode=sample  # outline | sample | disc
  python -m jgen.metrics.control --run /tmp/controlnet_fill      # disc IoU, colour accuracy

The data are `derived:outline:fill` (source = the circle's outline, target = the filled disc,
label = its colour, the paper's prompt). The colour-conditional base (ddpm_cond_fill, loaded
whole into params/unet) stays frozen and keeps choosing the colour, with classifier-free
guidance w = 2 (the outline in both branches); the copy of its embedding, down path and middle
(a second load with `CONTROL_COPY`), the zero convolutions and the condition encoder train
(Adam 1e-3, constant, 1,500 steps of batch 32). `:smoke` is seconds.
"""

import ml_collections

from jgen.diffusion.controlnet import CONTROL_COPY, CONTROL_RULES
from jgen.train.config import experiment_module

_base = experiment_module("ddpm_cond_fill", beside=__file__)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "smoke"):
    raise ValueError(f"unknown variant {arg!r} of controlnet_fill; use 'smoke'")
  c = _base.get_config(arg)
  c.method = "diffusion.controlnet"
  c.data.source = "derived:outline:fill"
  c.data.random_flip = False
  c.optim.rules = CONTROL_RULES
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 0
  c.optim.schedule = "constant"
  c.control = ml_collections.ConfigDict()
  c.control.hint_channels = (16, 32)
  c.init_from.subtree = "params"
  c.init_from.into = "params/params/unet"
  c.init_from.copy = ml_collections.ConfigDict()
  c.init_from.copy.workdir = c.init_from.get_ref("workdir")
  c.init_from.copy.subtree = "params"
  c.init_from.copy.into = "params/params/control"
  c.init_from.copy.match = CONTROL_COPY
  if arg is None:
    c.train.num_steps = 1500
    c.train.checkpoint_every = 500
    c.train.sample_every = 1500
    c.train.eval_every = 0
  c.sample.num = 16 if arg is None else 4
  c.sample.batch_size = c.sample.num
  return c
