"""AE, DAE, VAE or VQ-VAE on MNIST-format data (28x28 padded by resizing to 32x32, 1 channel).

  python launch.py --config experiments/autoencoder/mnist.py:method=vae --workdir /tmp/vae_mnist
  # MNIST-format idx files on disk instead of tensorflow-datasets (e.g. Fashion-MNIST from
  # Debian's dataset-fashion-mnist package):
  python launch.py --config experiments/autoencoder/mnist.py:method=vqvae --workdir /tmp/vq_fmnist \
      --config.data.source=idx:/usr/share/datasets/fashion-mnist

The argument `method=` names the method (vae: the default, ae, dae, vqvae); each starts from its
digits config (experiments/autoencoder/base.py) and sets data and network for MNIST.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)
ARGS = dict(method=("vae", "ae", "dae", "vqvae"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  method = parse_arg(arg, **ARGS).method
  c = _base.get_config(method, None)
  c.data.source = "tfds:mnist"
  c.data.image_size = 32
  c.data.channels = 1
  c.data.resize = True
  c.data.batch_size = 128
  c.model.ch = 32
  c.model.ch_mult = (1, 2, 2, 2)
  c.model.num_res_blocks = 1
  c.model.num_groups = 8
  c.model.latent_dim = 32
  c.train.num_steps = 20_000
  c.train.checkpoint_every = 2_000
  c.train.eval_every = 2_000
  c.train.eval_batches = 20
  c.train.sample_every = 5_000
  c.eval.metrics = "rfid,lpips"     # --mode=eval: rFID and reconstruction LPIPS (AlexNet)
  if method == "vqvae":
    c.vq.num_codes = 512
    c.vq.code_dim = 32
  return c
