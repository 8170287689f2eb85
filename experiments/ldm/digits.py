"""Class-conditional latent diffusion on the 4x4x8 latents of a frozen vqgan_digits run.

  python launch.py --config experiments/first_stage/vqgan_digits.py --workdir /tmp/vqgan_digits
  python launch.py --config experiments/ldm/digits.py --workdir /tmp/ldm_digits \
      --config.init_from.workdir=/tmp/vqgan_digits
  python launch.py --config experiments/ldm/digits.py --workdir /tmp/ldm_digits \
      --mode=sample --config.sample.guidance_scale=3 --config.sample.labels=7

Stage 2 of latent diffusion (`diffusion.ldm`): the VQ-GAN's EMA autoencoder is frozen in
``state.frozen["autoencoder"]`` (its architecture comes from its run record; only the data,
16x16 digits, must match), the latents are scaled by 1/std of the first batch's latents
(measured once, recorded in the state, logged), and a small U-Net (ch 32, ch_mult (1, 2):
4x4 and 2x2, one residual block per level, self- and cross-attention at both and in the
middle; 0.78M parameters) learns eps on them, the label entering as 4 learned tokens of
width 32 through cross-attention (4 heads; null tokens for classifier-free guidance, label
dropout 0.1). Samples: 50-step DDIM, every class in turn (10 per row), guidance w = 3,
decoded by the frozen decoder after snapping to the nearest code. ch 64 with two blocks per
level (4.5M parameters) ran 1.2 steps/s here, too slow for the budget; this one ran 6.6
steps/s (2 shared CPU cores), 2500 steps of batch 64 in about 7 minutes.
``init_from.workdir`` defaults to the /tmp/vqgan_digits of the commands above. `:smoke` is
the tests' seconds-long run on an 8x8 vqgan_digits:smoke run (4x4x4 latents).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = parse_arg(arg, **ARGS).smoke
  c = _base.cross_attention(_base.get_config("diffusion.ldm", smoke=smoke), smoke=smoke)
  c.ldm.num_tokens = 4            # label -> L tokens of width context_dim (cross-attention)
  if smoke:
    c.sample.num = c.sample.batch_size = 10  # one row of classes
  return c
