"""Denoising diffusion GAN (T = 4) on scikit-learn's 8x8 digits resized to 16x16.

  python launch.py --config experiments/gan/ddgan_digits.py --workdir /tmp/ddgan_digits
  python launch.py --config experiments/gan/ddgan_digits.py --workdir /tmp/ddgan_digits \
      --mode=sample
  python benchmarks/gan_digits.py --run experiments/gan/ddgan_digits.py=/tmp/ddgan_digits

A small U-Net generator (z through the mapping network into its time embedding) and the
time-conditional discriminator, non-saturating loss, lazy R1 on real x_{t-1}, EMA generator;
the method's fields and the paper's values are in experiments/gan/base_ddgan.py, with the
digits schedule (beta_max 10) and rates (G 1.6e-4, D 1e-3) and why. 1,800 steps in 10.6 min on 2
idle CPU cores: 9/10 classes, domain FID 122.2 (docs/families/few_step.md). Sampling is T = 4
generator calls (`sample.steps` must stay T). Variant `:smoke` is a seconds-long run for tests.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base_ddgan", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  return _base.digits(smoke=a.smoke)
