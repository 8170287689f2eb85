"""pix2pix colorization of CIFAR-10 at 32x32: grayscale -> color (`derived:grayscale:tfds:cifar10`).

Needs CIFAR-10 prepared for tfds under `data.data_dir` (jgen never downloads; see README), or
the JPEG copy in ../shared/data through a folder source:

  python launch.py --config experiments/translation/pix2pix_cifar_colorize.py \
      --workdir /tmp/p2p_colorize
  python launch.py --config experiments/translation/pix2pix_cifar_colorize.py \
      --workdir /tmp/p2p_colorize \
      --config.data.source=derived:grayscale:folder:../shared/data/cifar10-jpeg.zip

The source is the luma repeated to 3 channels, the target the color image. U-Net 5 downs (32 ->
1x1, ngf 64), PatchGAN n_layers 2 (ndf 64, 34x34 fields: 2x2 logits at 32x32), batch 64,
mirroring, lambda = 100. Variant: `:smoke`.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke = a.smoke
  c = _base.pix2pix_base(smoke=smoke)
  c.data.source = "derived:grayscale:tfds:cifar10"
  c.data.image_size = 32
  c.data.channels = 3
  c.data.resize = False
  c.data.random_flip = True
  c.model.num_downs = 5
  if not smoke:
    c.data.batch_size = 64
    c.model.ngf = 64
    c.model.ndf = 64
    c.train.num_steps = 50000
    c.train.checkpoint_every = 5000
    c.train.sample_every = 5000
    c.train.eval_every = 5000
  return c
