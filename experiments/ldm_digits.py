"""Class-conditional latent diffusion on the 4x4x8 latents of a frozen vqgan_digits run.

  python launch.py --config experiments/vqgan_digits.py --workdir /tmp/vqgan_digits
  python launch.py --config experiments/ldm_digits.py --workdir /tmp/ldm_digits \
      --config.init_from.workdir=/tmp/vqgan_digits
  python launch.py --config experiments/ldm_digits.py --workdir /tmp/ldm_digits \
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

from jgen.train.config import experiment_module

_base = experiment_module("base_ddpm", beside=__file__)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "smoke"):
    raise ValueError(f"unknown variant {arg!r} of ldm_digits; use 'smoke'")
  smoke = arg == "smoke"
  c = _base.get_config()
  c.method = "diffusion.ldm"

  c.data.source = "digits"
  c.data.image_size = 8 if smoke else 16  # the first stage's (vqgan_digits:smoke is 8x8)
  c.data.channels = 1
  c.data.resize = True
  c.data.batch_size = 8 if smoke else 64

  c.init_from.workdir = "/tmp/vqgan_digits"
  c.init_from.subtree = "autoencoder"     # encode/decode's parameters (no critic)
  c.init_from.into = "frozen/autoencoder"
  c.init_from.source = "ema"

  c.ldm = ml_collections.ConfigDict()
  c.ldm.scale_factor = ml_collections.FieldReference(None, field_type=float)  # None: measure
  c.ldm.num_tokens = 4            # label -> L tokens of width context_dim (cross-attention)
  c.ldm.context_dim = 16 if smoke else 32
  c.ldm.cross_attn_heads = 1 if smoke else 4
  c.ldm.quantize_samples = True   # VQ: nearest code before decoding (LDM's VQ interface)

  c.model.num_classes = 10
  c.model.ch = 16 if smoke else 32
  c.model.ch_mult = (1, 2)        # 4x4 -> 2x2 latents
  c.model.num_res_blocks = 1
  c.model.attn_resolutions = (4, 2)
  c.model.dropout = 0.0 if smoke else 0.1
  c.model.num_groups = 4 if smoke else 8

  c.diffusion.num_timesteps = 20 if smoke else 1000
  c.diffusion.cond_drop_prob = 0.1

  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 0 if smoke else 100
  c.optim.schedule = "constant" if smoke else "cosine"
  c.optim.grad_clip_norm = 1.0

  c.train.num_steps = 4 if smoke else 2500
  c.train.ema_decay = 0.999
  c.train.ema_warmup = True
  c.train.log_every = 2 if smoke else 100
  c.train.checkpoint_every = 2 if smoke else 1000
  c.train.sample_every = 0
  c.train.eval_every = 4 if smoke else 1000
  c.train.eval_batches = 1 if smoke else 4

  c.sample.clip_denoised = False  # latents are not bounded to [-1, 1]
  c.sample.steps = 5 if smoke else 50
  c.sample.guidance_scale = 3.0
  c.sample.num = 10 if smoke else 100
  c.sample.batch_size = 10 if smoke else 100
  return c
