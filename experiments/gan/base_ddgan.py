"""The base of the denoising diffusion GAN experiments (ddgan_digits, ddgan_cifar).

Experiment files load this module by path (`experiment_module("base_ddgan", beside=__file__)`)
and never each other. `get_config()` holds the method's fields at the paper's CIFAR-10 values
(Xiao et al. 2022, the reference command of NVlabs/denoising-diffusion-gan); `digits()` scales
them to the CPU recipe.

Optimizers: `optim` is the generator's; `optim_d`, the discriminator's, follows `optim` in every
field it does not set (`base_gan.follow_optim`, resolved by
`jgen.gan.adversarial.discriminator_optim`).

`sample.steps` is None (= T = `diffusion.num_timesteps`, the only step count a DDGAN samples
with); any other value is an error.
"""

import ml_collections

from jgen.train.config import base_config, digits_data, experiment_module, smoke_schedule

_gan = experiment_module("base", beside=__file__)


def get_config() -> ml_collections.ConfigDict:
  """gan.ddgan with the paper's CIFAR-10 settings (networks, T, losses, optimizers, EMA)."""
  c = base_config()
  c.method = "gan.ddgan"

  # The VP SDE beta(s) = beta_min + s (beta_max - beta_min), discretized to T steps.
  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.num_timesteps = 4     # T
  c.diffusion.beta_min = 0.1
  c.diffusion.beta_max = 20.0

  # Generator: the DDPM U-Net (the paper: NCSN++ at the same widths) + the z mapping network.
  c.model.ch = 128                  # --num_channels_dae 128
  c.model.ch_mult = (1, 2, 2, 2)
  c.model.num_res_blocks = 2
  c.model.attn_resolutions = (16,)
  c.model.num_groups = 32
  c.model.z_dim = 100               # --nz 100
  c.model.z_emb_dim = 256           # --z_emb_dim 256
  c.model.n_mlp = 4                 # --n_mlp 4
  # Discriminator: the reference's small one, ngf = 64: 128 -> 128, 256, 512, 512 channels.
  c.model.d_ch = 128
  c.model.d_ch_mult = (1, 2, 4, 4)
  c.model.t_emb_dim = 256           # --t_emb_dim 256
  c.model.mbstd_group = 4

  c.gan = ml_collections.ConfigDict()
  # The reference's R1 gamma 0.02 on every 15th D step, unscaled; jgen's lazy R1 multiplies the
  # penalty by r1_every, so gamma = 0.02 / 15 gives the same penalty on the same steps.
  c.gan.r1_gamma = 0.02 / 15
  c.gan.r1_every = 15               # --lazy_reg 15

  c.optim.name = "adam"             # generator: --lr_g 1.6e-4, betas (0.5, 0.9)
  c.optim.lr = 1.6e-4
  c.optim.b1 = 0.5
  c.optim.b2 = 0.9
  c.optim.grad_clip_norm = 0.0      # the reference clips nothing
  c.optim.schedule = "cosine"       # the reference: cosine annealing per epoch to 1e-5 (here 0)
  c.optim_d = _gan.follow_optim()
  c.optim_d.lr = 1.25e-4            # --lr_d 1.25e-4

  c.train.ema_decay = 0.9999        # --use_ema --ema_decay 0.9999
  c.train.ema_warmup = False

  c.sample.steps = ml_collections.FieldReference(None, field_type=int)  # None: T
  return c


def digits(smoke: bool = False) -> ml_collections.ConfigDict:
  """The 16x16 digits recipe (2 CPU cores; `smoke`: 8x8, seconds)."""
  c = digits_data(get_config(), smoke=smoke)

  # Widths measured for 10 minutes on 2 CPU cores: ch = d_ch = 32 took 1.22 s/step, 16 takes
  # 0.20 s/step alone, 0.28 in the loop (G 0.28M, D 0.06M parameters): 1,800 steps
  # (2,000 took 640 s wall with compiling and sampling).
  c.model.ch = 16
  c.model.ch_mult = (1, 2, 2)
  c.model.num_res_blocks = 1
  c.model.attn_resolutions = ()
  c.model.num_groups = 8
  c.model.z_dim = 32
  c.model.z_emb_dim = 64
  c.model.n_mlp = 2
  c.model.d_ch = 16
  c.model.d_ch_mult = (1, 2, 2)   # 16 -> 16, 8, 4
  c.model.t_emb_dim = 64
  # The schedule and the learning rates of issue 37 (docs/families/few_step.md). With beta_max
  # 20 the top step's x_{T-2} carries its x0 at c1 / sigma = 0.058 per pixel: on 16x16 upscaled
  # 8x8 digits (64 effective dimensions; CIFAR-10 has 3,072) the discriminator can hardly tell
  # G's x0 there. beta_max 10 gives 0.233 and still ends at abar = 0.0064 (x_{T-1} ~ N(0, I) up
  # to a 0.08 x0 signal). The paper's G rate and a 6x faster D: at G 3.2e-4 / D 2.5e-4, D's
  # scores sat within +-0.02 of 0 (chance) from step 500 on, and G learned nothing more.
  c.diffusion.beta_max = 10.0
  c.optim.lr = 1.6e-4
  c.optim_d.lr = 1e-3

  c.train.num_steps = 1800
  c.train.ema_decay = 0.999
  c.train.ema_warmup = True
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.sample_every = 1000
  c.train.eval_every = 0

  c.sample.num = 100
  c.sample.batch_size = 100
  if smoke:
    c.model.ch = 8
    c.model.ch_mult = (1, 2)
    c.model.num_groups = 4
    c.model.z_dim = 4
    c.model.z_emb_dim = 8
    c.model.n_mlp = 1
    c.model.d_ch = 4
    c.model.d_ch_mult = (1, 2)
    c.model.t_emb_dim = 8
    c.gan.r1_every = 2              # the lazy R1 runs at steps 0 and 2 and skips 1 and 3
    smoke_schedule(c, checkpoint_every=2)
    c.train.eval_every = 4
  return c
