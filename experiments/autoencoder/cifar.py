"""AE, DAE, VAE or VQ-VAE on CIFAR-10 (32x32x3).

  python launch.py --config experiments/autoencoder/cifar.py:method=vqvae --workdir /tmp/vq_cifar
  python launch.py --config experiments/autoencoder/cifar.py:method=vae --workdir /tmp/vae_cifar \
      --config.data.source=folder:../shared/data/cifar10-jpeg.zip

The argument `method=` names the method (vae: the default, ae, dae, vqvae). The VAE uses the
discretized-logistic decoder (8-bit colour images; bits/dim reported at eval). The VQ-VAE follows
the paper's CIFAR-10 shape: a 8x8 map of codes, K=512.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)
ARGS = dict(method=("vae", "ae", "dae", "vqvae"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  method = parse_arg(arg, **ARGS).method
  c = _base.get_config(method, "logistic" if method == "vae" else None)
  c.data.source = "tfds:cifar10"
  c.data.image_size = 32
  c.data.channels = 3
  c.data.resize = False
  c.data.random_flip = True
  c.data.batch_size = 128
  c.model.ch = 64
  c.model.ch_mult = (1, 2, 2)
  c.model.num_res_blocks = 2
  c.model.num_groups = 16
  c.model.latent_dim = 128
  c.optim.lr = 2e-4
  c.train.num_steps = 100_000
  c.train.checkpoint_every = 5_000
  c.train.eval_every = 5_000
  c.train.eval_batches = 20
  c.train.sample_every = 10_000
  c.eval.metrics = "rfid,lpips"     # --mode=eval: rFID and reconstruction LPIPS (AlexNet)
  if method == "vqvae":
    c.vq.num_codes = 512
    c.vq.code_dim = 64
  return c
