"""Stable Diffusion with a ControlNet (`jgen.diffusion.sd_controlnet`): sample with condition
images, or train a ControlNet on a converted Stable Diffusion.

  python -m jgen.convert path/to/stable-diffusion-v1-5 /tmp/sd15
  python -m jgen.convert path/to/sd-controlnet-canny /tmp/sd15_canny --base=/tmp/sd15
  python launch.py --config experiments/sd/controlnet.py --workdir /tmp/sd15_canny \
      --mode=sample --config.sample.source=/path/to/edge_maps \
      --config.sample.prompts="a bird|a house" --config.controlnet.conditioning_scale=0.8

  # a new ControlNet of a converted SD, on edges of a captioned or plain folder:
  python launch.py --config experiments/sd/controlnet.py:kind=train --workdir /tmp/my_canny \
      --config.init_from.workdir=/tmp/sd15 --config.data.source=derived:edges:folder:/photos \
      --config.text.captions="a photo"

Condition images are at the images' size (``data.image_size``) with the images' channels, in
[-1, 1] as jgen reads every image (diffusers' [0, 1] control images: ``controlnet.hint_range``
maps one onto the other). Sampling draws each condition image with each prompt of
``sample.prompts`` (``|``-separated): the condition images of ``--config.sample.source=DIR``, or
the ``source`` field of ``data.source``'s held-out split (``derived:edges:folder:DIR``,
``paired:DIR``).

Variants (``:kind=KIND,arch=ARCH``): ``arch`` is ``sd15`` (default), ``sd21`` or ``tiny``;
``kind=sample`` (default) samples a converted run (nothing trains); ``kind=train`` trains a new
ControlNet on a converted Stable Diffusion (``init_from.workdir``: its U-Net into ``params/unet``
and, as the trainable copy, into ``params/control``; its text encoder and autoencoder frozen), as
diffusers' ``train_controlnet`` (Adam 1e-5, no caption dropout, the U-Net frozen); ``kind=finetune``
continues training a converted ControlNet (``init_from.workdir``: an ``sd_controlnet`` run, all of
its parameters).
"""

import ml_collections

from jgen.diffusion.controlnet import CONTROL_COPY
from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("txt2img", beside=__file__)
KINDS = ("sample", "train", "finetune")
ARGS = dict(kind=KINDS, arch=_base.ARCHS)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  kind, arch = a.kind, a.arch
  c = _base.config(arch)
  c.method = "diffusion.sd_controlnet"

  # The ControlNet (jgen.nn.controlnet, diffusers' layout): the condition encoder's widths
  # (SD: (16, 32, 96, 256), the condition image at 8x the latent's size: the image's), the
  # range it reads, and the strength k of its residuals.
  c.controlnet = ml_collections.ConfigDict()
  n = c.controlnet
  n.hint_channels = (16, 32, 96, 256)
  n.hint_range = (0.0, 1.0)           # diffusers' ControlNets read [0, 1] control images
  n.conditioning_scale = 1.0          # diffusers' controlnet_conditioning_scale
  n.guess_mode = False                # residual scales by depth (no cond-only branch in jgen)

  c.data.random_flip = False
  c.sample.source = ""                # a folder of condition images (or data.source's pairs)
  c.sample.guidance_scale = 7.5

  if arch == "tiny":
    n.hint_channels = (8, 16)         # the tiny autoencoder downsamples once

  if kind in ("train", "finetune"):
    c.data.source = "derived:edges:folder:/path/to/images"
    c.data.resize = True
    c.data.batch_size = 1 if c.data.image_size >= 512 else 8
    c.text.captions = "a photo"       # '|'-separated per label, or the source's own tokens
    c.diffusion.cond_drop_prob = 0.0  # train_controlnet's proportion_empty_prompts
    _base.load_frozen_from_converted(c)
    c.init_from.source = "params"
    if kind == "train":               # the converted SD's U-Net, twice
      c.init_from.subtree = "unet"
      c.init_from.into = "params/unet"
      c.init_from.copy = ml_collections.ConfigDict()
      c.init_from.copy.workdir = c.init_from.get_ref("workdir")
      c.init_from.copy.source = "params"
      c.init_from.copy.subtree = "unet"
      c.init_from.copy.into = "params/control"
      c.init_from.copy.match = CONTROL_COPY
    else:                             # a converted sd_controlnet run: U-Net and ControlNet
      c.init_from.subtree = ""
      c.init_from.into = "params"
    c.optim.rules = (("control/.*", 1.0), (".*", "frozen"))
    c.optim.lr = 1e-5
    c.optim.schedule = "constant"
    c.optim.warmup_steps = 0
    c.optim.grad_clip_norm = 1.0
    c.train.num_steps = 10000
    c.train.checkpoint_every = 1000
    c.train.sample_every = 1000
    c.train.log_every = 10
    c.train.eval_every = 0
    c.sample.num = 4
    c.sample.batch_size = 4
    if arch == "tiny":
      c.optim.lr = 1e-3
      c.data.batch_size = 2
      c.train.num_steps = 2
      c.train.checkpoint_every = 2
      c.train.sample_every = 0
      c.train.log_every = 1
      c.sample.num = 2
      c.sample.batch_size = 2
      c.sample.steps = 2
  return c
