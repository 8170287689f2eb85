"""DDPM on CIFAR-10: the setup of Ho et al. 2020 (35.7M-parameter U-Net, T=1000, linear betas).

  python launch.py --config experiments/ddpm_cifar.py --workdir /tmp/ddpm_cifar
  # from local files instead of tensorflow-datasets:
  python launch.py --config experiments/ddpm_cifar.py --workdir /tmp/ddpm_cifar \
      --config.data.source=folder:../shared/data/cifar10-jpeg.zip
  # variants: experiments/ddpm_cifar.py:bf16 (bfloat16 compute, GPU/TPU), :smoke (tiny, CPU)
"""

import ml_collections

from jgen.train.config import experiment_module

_base = experiment_module("base_ddpm", beside=__file__)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "bf16", "smoke"):
    raise ValueError(f"unknown variant {arg!r} of ddpm_cifar; use 'bf16' or 'smoke'")
  return _base.cifar(arg)
