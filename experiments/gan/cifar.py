"""GAN, cGAN, WGAN or WGAN-GP on CIFAR-10 (32x32x3).

  python launch.py --config experiments/gan/cifar.py:method=wgan_gp --workdir /tmp/wgan_gp_cifar
  python launch.py --config experiments/gan/cifar.py:method=wgan_gp --workdir /tmp/wgan_gp_cifar \
      --config.data.source=folder:../shared/data/cifar10-jpeg.zip

`:method=wgan_gp` (the default) is the WGAN-GP paper's CIFAR-10 ResNet setup (Gulrajani et al. 2017,
appendix and gan_cifar_resnet.py): ResNet generator (128 features, three up-blocks, batch norm) and
critic (128 features, no normalization), z of 128, batch 64, 5 critic steps, lambda = 10,
Adam(2e-4, b1=0, b2=0.9) decayed to 0 over 100k generator steps (cosine here; the paper decays
linearly). `:method=cgan` is the same ResNet pair with class conditioning (projection critic) and
the hinge loss; `:method=dcgan` and `:method=wgan` use DCGAN networks (4x4x256 -> ... -> 32x32x3)
with the papers' optimizers.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)
ARGS = dict(method=("wgan_gp", *(m for m in _base.METHODS if m != "wgan_gp")))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.digits_config(a.method)
  c.data.source = "tfds:cifar10"
  c.data.image_size = 32
  c.data.channels = 3
  c.data.resize = False
  c.data.random_flip = True
  c.model.z_dim = 128
  c.model.g_features = 64
  c.model.d_features = 64
  c.train.num_steps = 100_000
  c.train.checkpoint_every = 5_000
  c.train.sample_every = 5_000
  c.train.ema_decay = 0.9999
  if a.method in ("wgan_gp", "cgan"):
    c.model.arch = "resnet"
    c.model.g_features = 128
    c.model.d_features = 128
    c.model.g_norm = "batch"
    c.model.d_norm = "none"
    c.optim.lr = 2e-4             # both networks (optim_d follows optim)
    c.optim.b1 = 0.0
    c.optim.b2 = 0.9
    c.optim.schedule = "cosine"
  if a.method == "cgan":
    c.gan.loss = "hinge"
  return c
