"""EDM on CIFAR-10 (Karras et al. 2022, "config F" of Table 2 for unconditional CIFAR-10 at
32x32, FID 1.97 with 35 network evaluations).

  python launch.py --config experiments/ddpm/edm_cifar.py --workdir /tmp/edm_cifar \
      --config.data.source=folder:../shared/data/cifar10-jpeg.zip

EDM's CIFAR-10 DDPM++ settings, as set here: 128 base channels with multipliers (2, 2, 2),
4 residual blocks per resolution, attention at 16x16, dropout 0.13; Adam with lr 1e-3, betas
(0.9, 0.999), eps 1e-8, batch 512, a linear learning-rate warm-up over the first 10M images
(19,531 steps) and no decay; 200M training images (390,625 steps); an EMA with a half-life of
0.5M images (decay 0.5^(512 / 500,000) = 0.99929 per step); sigma_data = 0.5, ln sigma ~
N(-1.2, 1.2^2), sigma in [0.002, 80]; sampling with 18 Heun steps, rho = 7, no churn; horizontal
flips off.

Differences, named: the network is jgen's U-Net (Ho et al.'s DDPM layout: stride-2
convolutions down, nearest-neighbour up-sampling with a convolution, no 1/sqrt(2) scaling of
the skip connections) rather than EDM's DDPM++ (Song et al. 2021; average-pool down-sampling,
skip connections scaled by 1/sqrt(2)); both embed c_noise sinusoidally. EDM's non-leaking
geometric augmentation (p = 0.12, with its conditioning on the augmentation) is not in jgen.
Variants: `:smoke` (tiny, CPU).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.edm(_base.cifar(smoke=a.smoke))
  if a.smoke:
    c.sample.steps = 3
    return c
  c.model.ch = 128
  c.model.ch_mult = (2, 2, 2)
  c.model.num_res_blocks = 4
  c.model.attn_resolutions = (16,)
  c.model.dropout = 0.13
  c.data.batch_size = 512
  c.data.random_flip = False
  c.optim.lr = 1e-3               # Adam's betas (0.9, 0.999) and eps 1e-8: the base's
  c.optim.warmup_steps = 19_531
  c.optim.grad_clip_norm = 0.0
  c.train.num_steps = 390_625
  c.train.ema_decay = 0.99929
  return c
