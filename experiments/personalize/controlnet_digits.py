"""ControlNet on the digits DDPM: the Sobel edges of a digit steer the frozen quickstart model.

  python launch.py --config experiments/ddpm/digits.py --workdir /tmp/ddpm_digits
  python launch.py --config experiments/personalize/controlnet_digits.py \
      --workdir /tmp/controlnet_digits \
      --config.init_from.workdir=/tmp/ddpm_digits
  python launch.py --config experiments/personalize/controlnet_digits.py \
      --workdir /tmp/controlnet_digits \
      --config.init_from.workdir=/tmp/ddpm_digits --mode=sample   # edges | sample | digit
  python -m jgen.cli.control --run /tmp/controlnet_digits     # edge IoU vs the base

The data are `derived:edges:digits` (source = the edges, target = the digit). The base U-Net
(ddpm_digits' settings, loaded whole into params/unet) stays frozen; its embedding, down path
and middle are copied into the control branch (a second load with `CONTROL_COPY`), which trains
with the zero convolutions and the condition encoder (Adam 1e-3, 1,500 steps of batch 64). The
one --config.init_from.workdir override sets both loads. `:smoke` is seconds.
"""

import ml_collections

from jgen.diffusion.controlnet import configure
from jgen.train.config import experiment_module, parse_arg

_ddpm = experiment_module("../ddpm/digits", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _ddpm.get_config("smoke" if a.smoke else None)
  return configure(c, "derived:edges:digits", smoke=a.smoke)
