"""pix2pix transfer: fine-tune a pretrained generator and discriminator (a converted reference
checkpoint) on a paired folder, here 32x32 digits' edge maps -> digits.

  python -m jgen.convert checkpoints/edges2mnist/ /tmp/p2p_pretrained  # latest_net_G/D.pth
  python launch.py \
      --config experiments/translation/pix2pix_transfer.py:init_from=/tmp/p2p_pretrained \
      --workdir /tmp/p2p_transfer
  python launch.py --config experiments/translation/pix2pix_transfer.py \
      --workdir /tmp/p2p_scratch                 # the same run from scratch
  python launch.py \
      --config experiments/translation/pix2pix_transfer.py:init_from=/tmp/p2p_pretrained \
      --workdir /tmp/p2p_transfer --mode=eval    # L1, PSNR, the digits judge's figures

`init_from=WORKDIR` loads the converted run's `params` (generator and discriminator) into this
run's parameters through `config.init_from` (`jgen.train.init_from`; the optimizer starts
fresh). The networks are the reference's (`jgen.convert.translation`): U-Net of 5 downs (ngf 16,
instance norm, dropout placed and biases as pytorch-CycleGAN-and-pix2pix's
`UnetSkipConnectionBlock`), PatchGAN of 2 layers (ndf 16, instance norm), so a converted
`latest_net_G.pth` / `latest_net_D.pth` of this architecture loads; for another one (the zoo's
`facades_label2photo.pth` is unet_256, ngf 64, batch norm), pass the `--config.*` overrides
`python -m jgen.convert` prints. Instance norm: `init_from` fills parameters, not batch
statistics, so a batch-norm generator would restart its running averages.

Evidence (`benchmarks/translation_transfer.py`): a generator pretrained on MNIST's edge maps,
written as reference `.pth` files and converted back, fine-tuned for `steps` steps on the digits
against the same run from scratch. Variants: `init_from=PATH`, `steps=N` (300), `:smoke`.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(init_from="", steps=300, smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.pix2pix_base(smoke=a.smoke)
  c.data.image_size = 32
  c.data.batch_size = 16
  c.model.num_downs = 5          # 32 -> 1x1: the reference U-Net's least depth
  c.model.g_norm = "instance"
  c.model.d_norm = "instance"
  c.model.dropout_placement = "reference"
  c.model.edge_bias = False
  c.train.num_steps = a.steps
  c.train.log_every = 50
  c.train.checkpoint_every = a.steps
  c.train.sample_every = a.steps
  c.train.eval_every = 0
  if a.init_from:
    c.init_from.workdir = a.init_from
    c.init_from.source = "params"  # a converted run has no EMA
    c.init_from.into = "params"    # generator and discriminator
  if a.smoke:
    c.data.batch_size = 4
    c.train.num_steps = c.train.checkpoint_every = c.train.sample_every = 3
  return c
