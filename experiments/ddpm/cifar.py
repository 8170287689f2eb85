"""DDPM on CIFAR-10: the setup of Ho et al. 2020 (35.7M-parameter U-Net, T=1000, linear betas).

  python launch.py --config experiments/ddpm/cifar.py --workdir /tmp/ddpm_cifar
  # from local files instead of tensorflow-datasets:
  python launch.py --config experiments/ddpm/cifar.py --workdir /tmp/ddpm_cifar \
      --config.data.source=folder:../shared/data/cifar10-jpeg.zip
  # variants: experiments/ddpm/cifar.py:bf16 (bfloat16 compute, GPU/TPU), :smoke (tiny, CPU)
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(bf16=False, smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  return _base.cifar(bf16=a.bf16, smoke=a.smoke)
