"""ControlNet on the digits DDPM: the Sobel edges of a digit steer the frozen quickstart model.

  python launch.py --config experiments/ddpm_digits.py --workdir /tmp/ddpm_digits
  python launch.py --config experiments/controlnet_digits.py --workdir /tmp/controlnet_digits \
      --config.init_from.workdir=/tmp/ddpm_digits
  python launch.py --config experiments/controlnet_digits.py --workdir /tmp/controlnet_digits \
      --config.init_from.workdir=/tmp/ddpm_digits --mode=sample   # edges | sample | digit
  python -m jgen.metrics.control --run /tmp/controlnet_digits     # edge IoU vs the base

The data are `derived:edges:digits` (source = the edges, target = the digit). The base U-Net
(ddpm_digits' settings, loaded whole into params/unet) stays frozen; its embedding, down path
and middle are copied into the control branch (a second load with `CONTROL_COPY`), which trains
with the zero convolutions and the condition encoder (Adam 1e-3, 1,500 steps of batch 64). The
one --config.init_from.workdir override sets both loads. `:smoke` is seconds.
"""

import ml_collections

from jgen.diffusion.controlnet import CONTROL_COPY, CONTROL_RULES
from jgen.train.config import experiment_module

_ddpm = experiment_module("ddpm_digits", beside=__file__)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "smoke"):
    raise ValueError(f"unknown variant {arg!r} of controlnet_digits; use 'smoke'")
  c = _ddpm.get_config(arg)
  c.method = "diffusion.controlnet"
  c.data.source = "derived:edges:digits"
  c.data.random_flip = False
  c.optim.rules = CONTROL_RULES
  c.optim.lr = 1e-3
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
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"
  c.sample.num = 16 if arg is None else 4
  c.sample.batch_size = c.sample.num
  return c
