"""Class-conditional latent diffusion on CIFAR-10 (32x32, f = 4: 8x8x3 latents of a frozen
experiments/first_stage/vqgan_cifar.py run), for GPU.

  python launch.py --config experiments/first_stage/vqgan_cifar.py --workdir /tmp/vqgan_cifar ...
  python launch.py --config experiments/ldm/cifar.py --workdir /tmp/ldm_cifar \
      --config.init_from.workdir=/tmp/vqgan_cifar
  python launch.py --config experiments/ldm/cifar.py --workdir /tmp/ldm_cifar --mode=sample \
      --config.sample.guidance_scale=3 --config.sample.labels=3

`diffusion.ldm` as experiments/ldm/digits.py. The paper trains no CIFAR model; the settings
are its class-conditional ImageNet LDM-4 (``cin256``) scaled to 8x8 latents: U-Net ch 192,
ch_mult (1, 2, 3) (8, 4, 2), 2 residual blocks, attention at every level and the middle with
cross-attention to the label (LDM's ClassEmbedder: one 512-d token per class; 8 heads here),
linear betas 0.0015..0.0195 over T = 1000 (LDM spaces them linearly in sqrt(beta); jgen's
'linear' schedule is linear in beta: the nearest it has), eps-prediction, scale factor
measured (1/std), Adam (AdamW without decay) at 1e-6 x batch 128 (LDM's base_learning_rate
scaled by the batch), EMA 0.9999, label dropout 0.1 for classifier-free guidance, 50-step DDIM
samples at w = 3, FID on Inception features. `:smoke` builds in seconds (tests only).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = parse_arg(arg, **ARGS).smoke
  c = _base.get_config("diffusion.ldm", smoke=smoke)
  c.data.source = "tfds:cifar10"
  c.data.image_size = 32
  c.data.channels = 3
  c.data.resize = False
  c.data.random_flip = True
  c.init_from.workdir = "/tmp/vqgan_cifar"
  c.ldm.num_tokens = 1
  c.ldm.context_dim = 32 if smoke else 512
  c.ldm.cross_attn_heads = 1 if smoke else 8
  c.model.ch = 32 if smoke else 192
  c.model.num_groups = 8
  c.model.attn_resolutions = (4,)
  c.diffusion.beta_start = 0.0015
  c.diffusion.beta_end = 0.0195
  c.eval.features = "inception"
  if smoke:
    c.sample.num = c.sample.batch_size = 10
    return c
  _base.paper_schedule(c, batch_size=128, num_steps=500_000)
  c.model.ch_mult = (1, 2, 3)
  c.model.num_res_blocks = 2
  c.model.attn_resolutions = (8, 4, 2)
  c.model.num_groups = 32
  return c
