"""Latent consistency distillation (Luo et al. 2023) of the class-conditional ldm_digits model.

  python launch.py --config experiments/first_stage/vqgan_digits.py --workdir /tmp/vqgan_digits
  python launch.py --config experiments/ldm/digits.py --workdir /tmp/ldm_digits \
      --config.init_from.workdir=/tmp/vqgan_digits
  python launch.py --config experiments/distill/lcm_digits.py --workdir /tmp/lcm_digits \
      --config.init_from.workdir=/tmp/ldm_digits
  python launch.py --config experiments/distill/lcm_digits.py --workdir /tmp/lcm_digits \
      --mode=sample --config.sample.steps=1 --config.sample.guidance_scale=3

`diffusion.lcm`: the teacher's EMA network is frozen in ``state.frozen["teacher"]`` and its
frozen VQ-GAN in ``state.frozen["autoencoder"]`` (two loads of the one teacher workdir: setting
``init_from.workdir`` sets both), its latent scale factor is reused. The student is the
teacher's U-Net (label tokens through cross-attention) with a 64-wide embedding of w added to
the timestep embedding (zero-initialized: it starts as the teacher), trained on the skip-k grid
k = 20 of the teacher's T = 1000 (the 50 DDIM steps LCM distils), w ~ U[1, 5] (jgen's CFG
convention; the teacher's best w is 3), one guided DDIM step of the teacher per example, target
EMA mu = 0.95 (LCM's), sampling EMA 0.999, l2 distance (LCM's default) weighted by abar_t
(``lcm.weighting``: with LCM's lambda = 1 the top of the grid, where an x0 error is 158 times
the eps error on these betas, swamped the loss: 4-step samples of the asked digit fell to 64.7%
against 100% with abar_t, same run otherwise; README). Adam 2e-4 constant, batch 64, 1500 steps
(4.5 minutes here). Samples: 4 steps at w = 3, every class in turn.

What differs from LCM's Stable Diffusion recipe (a small learning rate on large batches of
LAION images, omega in [2, 14], i.e. w in [3, 15]): a 0.78M-parameter teacher on 4x4x8 latents
distilled in minutes on 2 CPU cores, a higher learning rate, the teacher's own w range.
`:smoke` is the tests' seconds-long run on an ldm_digits:smoke teacher
(T = 20: k = 5, a 4-point grid).
"""

import ml_collections

from jgen.train.config import base_config, digits_data, parse_arg, smoke_schedule

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke = a.smoke
  c = base_config()
  c.method = "diffusion.lcm"
  digits_data(c, smoke=smoke)  # the teacher's data

  # The teacher: a trained diffusion.ldm run. Its EMA network, and its own frozen first stage.
  c.init_from.workdir = "/tmp/ldm_digits"
  c.init_from.source = "ema"
  c.init_from.subtree = ""
  c.init_from.into = "frozen/teacher"
  c.init_from.autoencoder = ml_collections.ConfigDict()
  c.init_from.autoencoder.workdir = c.init_from.get_ref("workdir")
  c.init_from.autoencoder.step = c.init_from.get_ref("step")
  c.init_from.autoencoder.source = "frozen"
  c.init_from.autoencoder.subtree = "autoencoder"
  c.init_from.autoencoder.into = "frozen/autoencoder"

  c.lcm = ml_collections.ConfigDict()
  c.lcm.skip = 5 if smoke else 20   # k: the grid (n + 1) k - 1 of the teacher's T timesteps
  c.lcm.w_min = 1.0                 # the training range of the guidance scale w
  c.lcm.w_max = 5.0
  c.lcm.w_embed_dim = 16 if smoke else 64
  c.lcm.sigma_data = 0.5
  c.lcm.timestep_scaling = 10.0     # c_skip / c_out of 10 t (LCM's)
  c.lcm.distance = "l2"             # l2 | pseudo_huber
  c.lcm.huber_c = ml_collections.FieldReference(None, field_type=float)  # None: 0.00054 sqrt(d)
  c.lcm.target_decay = 0.95         # mu of the target EMA
  c.lcm.weighting = "abar"          # lambda(t_n): one (LCM's) | abar (see jgen.diffusion.lcm)

  c.optim.name = "adam"
  c.optim.lr = 2e-4
  c.optim.grad_clip_norm = 1.0

  c.train.num_steps = 1500
  c.train.ema_decay = 0.999
  c.train.ema_warmup = True
  c.train.log_every = 100
  c.train.checkpoint_every = 500
  c.train.sample_every = 0
  c.train.eval_every = 500
  c.train.eval_batches = 4

  c.sample.steps = 2 if smoke else 4
  c.sample.guidance_scale = 3.0
  c.sample.num = 100
  c.sample.batch_size = 100
  if smoke:
    smoke_schedule(c, checkpoint_every=2)
    c.train.eval_every = 4
  return c
