"""Flow matching on CIFAR-10 (Lipman et al. 2023, Sec. 6.1): the conditional OT path (jgen's
linear path, sigma_min = 0) with a velocity U-Net, sampled by integrating the ODE.

  python launch.py --config experiments/ddpm/flow_matching_cifar.py --workdir /tmp/fm_cifar \
      --config.data.source=folder:../shared/data/cifar10-jpeg.zip

The network, optimizer and schedule are ddpm_cifar's (Ho et al.'s 35.7M-parameter U-Net, Adam
2e-4, batch 128, 800k steps, EMA 0.9999) so the two train side by side; t is uniform on [0, 1]
as in Lipman et al. Differences from the paper: its U-Net is the ADM architecture of Dhariwal &
Nichol (2021) and its solver the adaptive dopri5 (here Euler's method with
`sample.steps`, or ode_heun / ode_midpoint); its path keeps sigma_min = 1e-4 at t = 0, which this
one sets to 0. Variants: `:smoke` (tiny, CPU).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.flow_matching(_base.cifar(smoke=a.smoke), time_distribution="uniform")
  if not a.smoke:
    c.sample.steps = 100
  return c
