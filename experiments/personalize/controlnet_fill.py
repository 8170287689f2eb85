"""ControlNet on the fill task (Zhang et al. 2023's fill50k, offline, 32x32): outline + colour.

  python launch.py --config experiments/ddpm/cond_fill.py --workdir /tmp/ddpm_cond_fill
  python launch.py --config experiments/personalize/controlnet_fill.py \
      --workdir /tmp/controlnet_fill \
      --config.init_from.workdir=/tmp/ddpm_cond_fill
  python launch.py --config experiments/personalize/controlnet_fill.py \
      --workdir /tmp/controlnet_fill \
      --config.init_from.workdir=/tmp/ddpm_cond_fill --mode=sample  # outline | sample | disc
  python -m jgen.cli.control --run /tmp/controlnet_fill      # disc IoU, colour accuracy

The data are `derived:outline:fill` (source = the circle's outline, target = the filled disc,
label = its colour, the paper's prompt). The colour-conditional base (ddpm_cond_fill, loaded
whole into params/unet) stays frozen and keeps choosing the colour, with classifier-free
guidance w = 2 (the outline in both branches); the copy of its embedding, down path and middle
(a second load with `CONTROL_COPY`), the zero convolutions and the condition encoder train
(Adam 1e-3, constant, 1,500 steps of batch 32). `:smoke` is seconds.
"""

import ml_collections

from jgen.diffusion.controlnet import configure
from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("../ddpm/cond_fill", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.get_config("smoke" if a.smoke else None)
  return configure(c, "derived:outline:fill", smoke=a.smoke)
