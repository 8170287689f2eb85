"""StyleGAN2-ADA's `cifar` configuration (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"; NVlabs/stylegan2-ada-pytorch `train.py`, `cfg_specs['cifar']`), for
a GPU.

  python launch.py --config experiments/gan/stylegan2_cifar.py --workdir /tmp/stylegan2_cifar
  python launch.py --config experiments/gan/stylegan2_cifar.py:cond --workdir /tmp/stylegan2_cifar_c

The reference's values (`ref_gpus=2, kimg=100000, mb=64, mbstd=32, fmaps=1, lrate=0.0025,
gamma=0.01, ema=500, ramp=0.05, map=2`, and for cifar `pl_weight=0`, `style_mixing_prob=0`,
D `architecture='orig'`):

* 32x32x3 CIFAR-10 train split with x-flips, batch 64 (two GPUs of 32), minibatch stddev over
  groups of 32;
* channels min(32768 / r, 512) = 512 at every resolution 4..32, z and w of 512, a 2-layer
  mapping network (lr multiplier 0.01), the skip generator; the discriminator without residual
  skips ('orig');
* Adam(0.0025, betas (0, 0.99), eps 1e-8) for both networks, non-saturating loss, lazy R1
  gamma 0.01 every 16 steps; no path-length term and no style mixing;
* G EMA over 500k images: decay 0.5^(64 / 500,000) = 0.999911 per step; the reference ramps
  the half-life up as 5% of the images seen (`ema_rampup`), jgen's EMA warm-up ramps the decay
  as (1 + t) / (10 + t) instead;
* ADA with target 0.6, p adjusted every 4 steps, 0 -> 1 in 500k images; the reference's 'bgc'
  pipeline has x-flip, 90-degree rotations, integer translation, scaling, rotation, anisotropy,
  fractional translation, brightness, contrast, luma flip, hue and saturation; jgen's pipeline
  (`jgen.gan.ada.OPS`) has all but luma flip and hue, plus cutout (not in 'bgc': left out here);
* 100M images (1,562,500 steps): the paper's 100,000 kimg.

Not the reference: the lazy R1 term enters the main discriminator step (no separate
regularization step, so no lr/beta rescaling by 16/17; `jgen.gan.stylegan2`). Not run on this
CPU machine (a 512-channel 32x32 StyleGAN2); variant `:smoke` checks that the config builds
and trains at 8x8 with 4 channels. `:cond` is the class-conditional variant (the reference's
`--cond=1`).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg, smoke_schedule

_base = experiment_module("base", beside=__file__)
_sg2 = experiment_module("stylegan2_digits", beside=__file__)

ARGS = dict(smoke=False, cond=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.gan_base()
  c.method = "gan.stylegan2"
  c.data.source = "tfds:cifar10"
  c.data.image_size = 32
  c.data.channels = 3
  c.data.resize = False
  c.data.random_flip = True
  c.data.batch_size = 64
  c.model = _sg2.model_config(features=(512, 512, 512, 512), z_dim=512, w_dim=512,
                              mapping_layers=2, mbstd_group=32, d_architecture="orig",
                              conv="lax")
  c.model.d_mapping_layers = 8   # the reference D's label mapping keeps its default depth
  _sg2.stylegan2_gan(c, r1_gamma=0.01, pl_weight=0.0, style_mixing=0.0)
  c.gan.num_classes = 10 if a.cond else 0
  c.gan.ada = True
  c.gan.ada_target = 0.6
  c.gan.ada_interval = 4
  c.gan.ada_kimg = 500.0
  c.gan.ada_ops = "xflip,rotate90,xint,scale,rotate,aniso,xfrac,brightness,contrast,saturation"

  c.train.num_steps = 1_562_500
  c.train.ema_decay = 0.5 ** (64 / 500_000)
  c.train.ema_warmup = True
  c.train.log_every = 1000
  c.train.checkpoint_every = 10_000
  c.train.sample_every = 50_000
  c.eval.metrics = "fid,pr"
  c.eval.num_samples = 50_000
  if a.smoke:
    c.data.source = "digits"
    c.data.image_size = 8
    c.data.channels = 1
    c.data.resize = True
    c.data.batch_size = 8
    c.model = _sg2.model_config(features=(4, 4), z_dim=8, w_dim=8, mapping_layers=2,
                                mbstd_group=4, d_architecture="orig")
    smoke_schedule(c, num_steps=2)
    c.eval.metrics = ""
  return c
