"""Progressive GAN on CelebA (tfds `celeb_a`) up to 128x128: the paper's schedule, for a GPU.

  python launch.py --config experiments/gan/progan_celeba.py --workdir /tmp/progan_celeba

Karras et al. 2018 (appendix A; reference code `tkarras/progressive_growing_of_gans`):
* growth 4x4 -> 8x8 -> ... -> 128x128 (6 levels, 11 phases): 800k real images per fade-in and
  per stabilization (`gan.images_per_phase`; the reference config's default is 600k, its
  v1 preset 800k), then the 128x128 stabilization until the end (here 12M images in total);
* minibatch 16 at every resolution 4x4 .. 128x128 (the paper lowers it only from 256x256:
  14, 6, 3), so one batch size serves the whole run as jgen's one compiled step needs;
* channels nf(level) = min(8192 / 2^(level + 1), 512): 512, 512, 512, 512, 256, 128 at
  4, 8, 16, 32, 64, 128 (Table 2), latent 512;
* WGAN-GP lambda 10, drift 0.001, n_critic 1, Adam(1e-3, 0, 0.99, 1e-8), G EMA 0.999, Adam
  state reset at every phase, minibatch stddev group 4, x-flips (`mirror_augment`).
Not from the paper: CelebA (not CelebA-HQ) center crops resized to 128x128 by the data source,
and `model.conv = "lax"` (cuDNN convolutions; `im2col` is the CPU choice, jgen.nn.progan).
Variant `:smoke`: 8x8, tiny, a few steps (a config check, not a result).
"""

import ml_collections

from jgen.train.config import base_config, experiment_module, parse_arg, smoke_schedule

_base_gan = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = base_config()
  c.method = "gan.progan"
  c.data.source = "tfds:celeb_a"
  c.data.image_size = 128
  c.data.channels = 3
  c.data.resize = True
  c.data.random_flip = True
  c.data.batch_size = 16

  c.model.z_dim = 512
  c.model.features = (512, 512, 512, 512, 256, 128)
  c.model.mbstd_group = 4
  c.model.conv = "lax"
  c.model.dtype = "float32"

  c.gan = ml_collections.ConfigDict()
  c.gan.images_per_phase = 800_000   # 50,000 steps of 16
  c.gan.gp_weight = 10.0
  c.gan.drift = 0.001
  c.gan.reset_optimizer = True
  _base_gan.ada_config(c.gan)       # --config.gan.ada=True: ADA at every phase

  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.b1 = 0.0
  c.optim.b2 = 0.99
  c.optim.eps = 1e-8
  c.optim.grad_clip_norm = 0.0

  c.train.num_steps = 750_000        # 12M images: 11 phases (8.8M) + 3.2M more at 128x128
  c.train.ema_decay = 0.999
  c.train.ema_warmup = False
  c.train.log_every = 500
  c.train.checkpoint_every = 10_000
  c.train.sample_every = 10_000
  c.sample.num = 64
  c.sample.batch_size = 64
  if a.smoke:
    c.data.image_size = 8
    c.data.batch_size = 8
    c.model.z_dim = 8
    c.model.features = (4, 4)
    c.gan.images_per_phase = 16
    smoke_schedule(c, num_steps=6)
  return c
