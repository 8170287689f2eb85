"""The base of every GAN experiment (dcgan/cgan/wgan/wgan_gp on digits, MNIST, CIFAR-10).

Experiment files load this module by path (`experiment_module("base", beside=__file__)`)
and never each other. `digits_config(method)` is each method's 16x16 digits setup; the MNIST
and CIFAR-10 configs start from it and scale data and networks.

Optimizers: `optim` is the generator's; `optim_d`, the discriminator's, **follows `optim`
unless set on its own**: its fields are placeholders (None = take `optim`'s value, resolved by
`jgen.gan.adversarial.discriminator_optim`), so `--config.optim.lr=1e-4` changes both networks
and `--config.optim_d.lr=4e-4` the discriminator only.
"""

import ml_collections

from jgen.train.config import base_config, digits_data, smoke_schedule

METHODS = ("dcgan", "cgan", "wgan", "wgan_gp")


def follow_optim() -> ml_collections.ConfigDict:
  """`optim_d` that follows `optim` in every optimizer field of `base_config().optim` (each a
  None placeholder of that field's type; `rules` select leaves of the whole tree, not D's)."""
  return ml_collections.ConfigDict(
      {k: ml_collections.FieldReference(None, field_type=type(v))
       for k, v in base_config().optim.items() if k != "rules"})


def ada_config(g: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """ADA's fields in a `gan` block, off (`--config.gan.ada=True` turns it on)."""
  # ADA (jgen.gan.ada): augment every image D sees with probability p, p tuned from
  # r_t = E[sign D(real)] toward ada_target every ada_interval steps (None: p fixed at ada_p).
  g.ada = False
  g.ada_p = 0.0
  g.ada_target = ml_collections.FieldReference(0.6, field_type=float)
  g.ada_interval = 4
  g.ada_kimg = 500.0
  g.ada_ops = ""            # "" = all of jgen.gan.ada.OPS, or e.g. "xflip,rotate90,xint"
  return g


def gan_base(*, smoke: bool = False, n_critic: int = 1) -> ml_collections.ConfigDict:
  """Shared digits GAN config; `data.batch_size` is n_critic * the GAN batch (64)."""
  c = base_config()
  c.method = "gan.dcgan"
  digits_data(c, smoke=smoke, batch_size=64 * n_critic)

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
  c.gan.r1_every = 1            # lazy R1: every k-th critic step, gamma scaled by k
  c.gan.clip = 0.0
  c.gan.num_classes = 0
  ada_config(c.gan)

  c.optim.name = "adam"          # generator (and discriminator, see optim_d)
  c.optim.lr = 2e-4
  c.optim.b1 = 0.5
  c.optim.b2 = 0.999
  c.optim.grad_clip_norm = 0.0
  c.optim_d = follow_optim()     # discriminator: None fields follow optim

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
    c.data.batch_size = 4 * n_critic
    c.model.z_dim = 8
    c.model.g_features = 4
    c.model.d_features = 4
    c.model.embed_dim = 4
    smoke_schedule(c)
  return c


def digits_config(method: str, *, smoke: bool = False) -> ml_collections.ConfigDict:
  """The 16x16 digits config of `method` (one of `METHODS`), before variants."""
  if method == "dcgan":
    return gan_base(smoke=smoke)
  if method == "cgan":
    c = gan_base(smoke=smoke)
    c.method = "gan.cgan"
    c.gan.num_classes = 10
    return c
  if method == "wgan":
    c = gan_base(smoke=smoke, n_critic=5)
    c.method = "gan.wgan"
    c.gan.loss = "wasserstein"
    c.gan.clip = 0.01
    c.optim = ml_collections.ConfigDict(dict(name="rmsprop", lr=5e-5, decay=0.99, eps=1e-8,
                                             grad_clip_norm=0.0))
    if not smoke:  # clipping + RMSProp 5e-5 learns slowly; 6,000 steps fit ~9 CPU minutes
      c.train.num_steps = 6000
      c.train.checkpoint_every = 2000
      c.train.sample_every = 2000
    return c
  if method == "wgan_gp":
    c = gan_base(smoke=smoke, n_critic=5)
    c.method = "gan.wgan_gp"
    c.gan.loss = "wasserstein"
    c.gan.gp_weight = 10.0
    c.model.d_norm = "layer"
    c.optim.lr = 1e-4
    c.optim.b1 = 0.0
    c.optim.b2 = 0.9
    return c
  raise ValueError(f"unknown GAN method {method!r}; choose one of {METHODS}")
