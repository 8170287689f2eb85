"""Improved consistency training on CIFAR-10, the settings of Song & Dhariwal 2023 (iCT: one-step
FID 2.83, two-step 2.46 there).

  python launch.py --config experiments/distill/ct_cifar.py --workdir /tmp/ct_cifar
  python launch.py --config experiments/distill/ct_cifar.py --workdir /tmp/ct_cifar --mode=sample \
      --config.sample.steps=2          # levels (80, 0.821), the paper's two-step choice
  # variants: :bf16, :smoke (tiny, CPU)

Paper: pseudo-Huber c = 0.00054 sqrt(3072), s0 = 10, s1 = 1280, K' = floor(K / 8), lognormal
levels (P_mean -1.1, P_std 2.0), weighting 1 / (sigma_{i+1} - sigma_i), no target EMA, sigma in
[0.002, 80], rho 7, sigma_data 0.5, dropout 0.3, Adam lr 1e-4, batch 1024, 400k iterations,
sampling EMA 0.99993, NCSN++ (56M). Here jgen's DDPM U-Net (35.7M) replaces NCSN++ (no
Fourier time features: c_noise = 250 ln sigma goes through the sinusoidal embedding).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base_consistency", beside=__file__)

ARGS = dict(bf16=False, smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.cifar("ct", bf16=a.bf16, smoke=a.smoke)
  c.model.dropout = 0.3
  c.consistency.distance = "pseudo_huber"
  c.data.batch_size = 1024
  c.optim.lr = 1e-4
  c.train.num_steps = 400_000
  c.train.ema_decay = 0.99993
  c.sample.steps = 1
  c.sample.batch_size = 256
  if a.smoke:
    c.data.batch_size = 8
    c.train.num_steps = 4
  return c
