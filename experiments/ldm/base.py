"""Latent diffusion's stage-2 base (`diffusion.ldm`, `diffusion.ldm_image`).

`get_config(method, smoke=...)` gives the CPU recipe every latent-diffusion experiment starts
from: 16x16 digits on the frozen EMA autoencoder of a vqgan_digits run (``init_from`` into
``frozen/autoencoder``, subtree ``autoencoder``; 4x4x8 latents), the latent scale factor
measured at init (None), nearest-code snapping before decoding, a small U-Net (ch 32, ch_mult
(1, 2): 4x4 and 2x2 latents, one residual block per level, self-attention at both and in the
middle, dropout 0.1), T = 1000, Adam 1e-3 with 100 warmup steps and a cosine decay, gradient
clip 1, EMA 0.999 with warmup, 2500 steps of batch 64, 50-step DDIM without clipping (latents
are not bounded to [-1, 1]). `cross_attention(c, smoke=...)` adds the U-Net's cross-attention
width and heads (label tokens or text). The experiment files change what differs; `:smoke`
(``smoke=True``) is the tests' seconds-long run on an 8x8 vqgan_digits:smoke first stage
(4x4x4 latents). Loaded by path: `experiment_module("base", beside=__file__)`.
"""

import ml_collections

from jgen.train.config import digits_data, experiment_module, smoke_schedule

_ddpm = experiment_module("../ddpm/base", beside=__file__)


def get_config(method: str, *, smoke: bool = False) -> ml_collections.ConfigDict:
  c = _ddpm.get_config()
  c.method = method
  digits_data(c, smoke=smoke)  # the first stage's data (vqgan_digits:smoke is 8x8)

  c.init_from.workdir = "/tmp/vqgan_digits"
  c.init_from.subtree = "autoencoder"     # encode/decode's parameters (no critic)
  c.init_from.into = "frozen/autoencoder"
  c.init_from.source = "ema"

  c.ldm = ml_collections.ConfigDict()
  c.ldm.scale_factor = ml_collections.FieldReference(None, field_type=float)  # None: measure
  c.ldm.quantize_samples = True   # VQ: nearest code before decoding (LDM's VQ interface)
  c.ldm.conditioning = "label"    # diffusion.ldm: label tokens | text (a caption encoder)

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
  c.optim.warmup_steps = 100
  c.optim.schedule = "cosine"
  c.optim.grad_clip_norm = 1.0

  c.train.num_steps = 2500
  c.train.ema_decay = 0.999
  c.train.ema_warmup = True
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.sample_every = 0
  c.train.eval_every = 1000
  c.train.eval_batches = 4

  c.sample.clip_denoised = False  # latents are not bounded to [-1, 1]
  c.sample.steps = 5 if smoke else 50
  c.sample.guidance_scale = 3.0
  c.sample.num = 100
  c.sample.batch_size = 100
  if smoke:
    smoke_schedule(c, checkpoint_every=2)
    c.train.eval_every = 4
  return c


def cross_attention(c: ml_collections.ConfigDict, *, smoke: bool = False
                    ) -> ml_collections.ConfigDict:
  """The U-Net's cross-attention: context width 32 (smoke 16), 4 heads (smoke 1)."""
  c.ldm.context_dim = 16 if smoke else 32
  c.ldm.cross_attn_heads = 1 if smoke else 4
  return c


def paper_schedule(c: ml_collections.ConfigDict, *, batch_size: int, num_steps: int
                   ) -> ml_collections.ConfigDict:
  """The GPU configs' LDM schedule: Adam at LDM's base_learning_rate 1e-6 scaled by the batch,
  10,000 warmup steps then constant, EMA 0.9999 without warmup, checkpoints and evals every
  10,000 steps, samples every 50,000."""
  c.data.batch_size = batch_size
  c.optim.lr = 1e-6 * batch_size
  c.optim.warmup_steps = 10_000
  c.optim.schedule = "constant"
  c.train.num_steps = num_steps
  c.train.ema_decay = 0.9999
  c.train.ema_warmup = False
  c.train.checkpoint_every = 10_000
  c.train.sample_every = 50_000
  c.train.eval_every = 10_000
  return c
