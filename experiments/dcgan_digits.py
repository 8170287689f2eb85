"""DCGAN on scikit-learn's 8x8 digits resized to 16x16 (non-saturating GAN loss).

  python launch.py --config experiments/dcgan_digits.py --workdir /tmp/dcgan_digits
  python launch.py --config experiments/dcgan_digits.py --workdir /tmp/dcgan_digits --mode=sample

`--mode=sample` writes a grid and an .npz of samples of the EMA generator. Variants: the loss
(`:minimax`, `:hinge`, `:least_squares`), `:smoke` (a seconds-long run for the tests).
`gan_base` is the data, network and schedule the digits GAN configs share.
"""

import ml_collections

from jgen.train.config import base_config


def gan_base(*, smoke: bool = False, n_critic: int = 1) -> ml_collections.ConfigDict:
  """Shared digits GAN config; `data.batch_size` is n_critic * the GAN batch (64)."""
  c = base_config()
  c.method = "gan.dcgan"
  c.data.source = "digits"
  c.data.image_size = 16
  c.data.channels = 1
  c.data.resize = True
  c.data.batch_size = 64 * n_critic

  c.model.arch = "dcgan"
  c.model.z_dim = 64
  c.model.g_features = 32       # 4x4x64 -> 8x8x32 -> 16x16x1
  c.model.d_features = 32       # 16x16x1 -> 8x8x32 -> 4x4x64 -> 1
  c.model.g_norm = "batch"
  c.model.d_norm = "batch"
  c.model.embed_dim = 16
  c.model.conditioning = "projection"

  c.gan = ml_collections.ConfigDict()
  c.gan.loss = "non_saturating"
  c.gan.n_critic = n_critic
  c.gan.gp_weight = 0.0
  c.gan.r1_gamma = 0.0
  c.gan.clip = 0.0
  c.gan.num_classes = 0

  c.optim.name = "adam"          # generator
  c.optim.lr = 2e-4
  c.optim.b1 = 0.5
  c.optim.b2 = 0.999
  c.optim.grad_clip_norm = 0.0
  c.optim_d = c.optim.copy_and_resolve_references()  # discriminator

  c.train.num_steps = 2000
  c.train.ema_decay = 0.999
  c.train.ema_warmup = True
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.sample_every = 1000
  c.train.eval_every = 0

  c.sample.num = 100
  c.sample.batch_size = 100
  if smoke:
    c.data.image_size = 8
    c.data.batch_size = 4 * n_critic
    c.model.z_dim = 8
    c.model.g_features = 4
    c.model.d_features = 4
    c.model.embed_dim = 4
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.checkpoint_every = 4
    c.train.sample_every = 0
    c.train.eval_every = 4
    c.train.eval_batches = 1
    c.sample.num = 8
    c.sample.batch_size = 8
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = gan_base(smoke=arg == "smoke")
  if arg in ("minimax", "hinge", "least_squares"):
    c.gan.loss = arg
  elif arg not in (None, "smoke"):
    raise ValueError(f"unknown variant {arg!r} of dcgan_digits; use 'minimax', 'hinge', "
                     "'least_squares' or 'smoke'")
  return c
