"""GAN, cGAN, WGAN or WGAN-GP on MNIST-format data (28x28 resized to 32x32, 1 channel).

  python launch.py --config experiments/gan/mnist.py:method=wgan_gp --workdir /tmp/wgan_gp_mnist
  # MNIST-format idx files on disk instead of tensorflow-datasets (the real MNIST test set in
  # ../shared, or Fashion-MNIST from Debian's dataset-fashion-mnist package):
  python launch.py --config experiments/gan/mnist.py:method=dcgan --workdir /tmp/dcgan_fmnist \
      --config.data.source=idx:/usr/share/datasets/fashion-mnist

The argument `method=` names the method (dcgan: the default, cgan, wgan, wgan_gp); each starts from
its digits config (`digits_config` of experiments/gan/base.py) and scales data and networks to 32x32
(DCGAN G 4x4x256 -> 8x8x128 -> 16x16x64 -> 32x32x1).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)
ARGS = dict(method=("dcgan", *(m for m in _base.METHODS if m != "dcgan")))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.digits_config(a.method)
  c.data.source = "tfds:mnist"
  c.data.image_size = 32
  c.data.channels = 1
  c.data.resize = True
  c.model.z_dim = 100
  c.model.g_features = 64
  c.model.d_features = 64
  c.train.num_steps = 20_000
  c.train.checkpoint_every = 2_000
  c.train.sample_every = 2_000
  return c
