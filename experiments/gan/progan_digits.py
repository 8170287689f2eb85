"""Progressive GAN on scikit-learn's digits at 16x16: 4x4 -> 8x8 -> 16x16 (Karras et al. 2018).

  python launch.py --config experiments/gan/progan_digits.py --workdir /tmp/progan_digits
  python launch.py --config experiments/gan/progan_digits.py --workdir /tmp/progan_digits \
      --mode=sample
  python benchmarks/gan_digits.py --run experiments/gan/progan_digits.py=/tmp/progan_digits

The paper's method at a CPU's scale: WGAN-GP (lambda 10) with the drift term (0.001), one critic
step per generator step, Adam(1e-3, 0, 0.99), equalized learning rate, pixel norm, minibatch
stddev (group 4), generator EMA 0.995 (the paper's 0.999 is for phases 100x longer). Phases of
`gan.images_per_phase` images each (the paper: 800k; here 12,800, 400 steps of 32): 4x4 stable,
fade in 8x8, 8x8 stable, fade in 16x16, 16x16 stable (5 phases; the last lasts to
`train.num_steps`). Narrower than the paper's 512 channels (`model.features` per level, 4x4
first), and narrowest at 16x16: the digits are 8x8 images upscaled, so that level only learns
the upsampling. Measured on 2 idle CPU cores: 5,400 steps in 294 s, WGAN-GP's 2,000 steps'
wall time (291 s), domain FID 44.88 against its 47.17 (docs/families/gans.md). Variant `:smoke`: 8x8
(4x4 -> 8x8), 4 channels, 2 steps per phase.
"""

import ml_collections

from jgen.train.config import (base_config, digits_data, experiment_module, parse_arg,
                                smoke_schedule)

_base_gan = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke = a.smoke
  c = base_config()
  c.method = "gan.progan"
  # Batch 32 (the paper's at 16x16 is 128, at 128x128 16): more updates in the same time.
  digits_data(c, smoke=smoke, batch_size=32)

  c.model.z_dim = 64
  # Channels at 4x4, 8x8, 16x16 (G and D). 16 at 16x16 made a step there 1.7x WGAN-GP's (0.46
  # against 0.27 s, on a shared CPU) and the top level took 71% of the wall time; 8 keeps the
  # 8x8 level, where the digits' content is, and cuts the top one.
  c.model.features = (32, 32, 8)
  c.model.mbstd_group = 4
  c.model.conv = "im2col"          # XLA:CPU: fast inside the phase switch (jgen.nn.progan)

  c.gan = ml_collections.ConfigDict()
  # 400 steps of 32 per fade-in / stabilization: 1,600 steps of growth, then 3,800 at 16x16.
  c.gan.images_per_phase = 12_800
  c.gan.gp_weight = 10.0
  c.gan.drift = 0.001
  c.gan.reset_optimizer = True      # fresh Adam moments at each phase (reference code)
  _base_gan.ada_config(c.gan)       # --config.gan.ada=True: ADA at every phase

  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.b1 = 0.0
  c.optim.b2 = 0.99
  c.optim.eps = 1e-8
  c.optim.grad_clip_norm = 0.0

  c.train.num_steps = 5_400         # 4 phases of 400 steps, the last (16x16) to the end
  # The paper's 0.999 averages over ~1,000 steps, 2% of its 800k-image phases at batch 16; over
  # 1,000-step phases it kept 13.5% of the 16x16 level's random init in the sampled generator
  # (domain FID 258 against 53 for the trained weights, docs/families/gans.md). 0.995: a
  # 200-step horizon.
  c.train.ema_decay = 0.995
  c.train.ema_warmup = False
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.sample_every = 1000
  c.train.eval_every = 0

  c.sample.num = 100
  c.sample.batch_size = 100
  if smoke:
    c.model.z_dim = 8
    c.model.features = (4, 4)
    c.gan.images_per_phase = 16     # 2 steps of 8 per phase: phases at steps 0, 2, 4
    smoke_schedule(c, num_steps=6)
  return c
