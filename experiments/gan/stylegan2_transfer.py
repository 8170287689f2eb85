"""StyleGAN2-ADA transfer learning: fine-tune a converted NVlabs pickle (G and D) on an image
folder with ADA (Karras et al. 2020, "Training Generative Adversarial Networks with Limited
Data", section 4 and figure 11; stylegan2-ada-pytorch's ``--resume``).

The paper's FFHQ -> MetFaces setting (a GPU run; ``:paper``):

  python -m jgen.convert ffhq-res1024-mirror-stylegan2-noaug.pkl /tmp/ffhq1024
  python launch.py --config experiments/gan/stylegan2_transfer.py:paper --workdir /tmp/metfaces \\
      --config.init_from.workdir=/tmp/ffhq1024 --config.data.source=folder:$HOME/metfaces

* source: NVlabs' transfer-learning source net ``ffhq-res1024-mirror-stylegan2-noaug.pkl``
  (FFHQ 1024x1024, x-flips, no augmentation), converted by ``python -m jgen.convert``: G, D and
  G_ema go into params and the EMA (`jgen.convert.stylegan2`), loaded here through
  ``init_from`` (source "params": G from G, D from D, as ``--resume`` does);
* target: MetFaces, 1,336 images at 1024x1024, with x-flips (``--mirror=1``);
* ``--cfg=paper1024``: batch 32, minibatch stddev groups of 4, channels min(32768 / r, 512),
  an 8-layer mapping network (lr multiplier 0.01), Adam(0.002, betas (0, 0.99), eps 1e-8) for
  both networks, lazy R1 with gamma 2, path length weight 2, style mixing 0.9, G EMA half-life
  10k images (decay 0.5^(32 / 10,000) per step) with no ramp-up when resuming;
* ``--aug=ada --target=0.6``: ADA tuned toward r_t = 0.6, ``ada_kimg=100`` when resuming (p can
  go 0 -> 1 in 100k images), the 'bgc' pipeline (jgen's `jgen.gan.ada.OPS` lack its luma flip
  and hue rotation: those two are left out);
* ``conv_clamp=256`` as the pickle has it; the reference runs its 4 highest resolutions in
  float16, jgen in float32;
* the reference trains for 25,000 kimg at most; its README reports transfer runs converging in
  about 1,000 kimg (31,250 steps of 32), the value here.

The digits-sized version (the default, seconds per hundred steps on a CPU core):
``benchmarks/stylegan2_transfer.py`` trains a small StyleGAN2 with the reference options on
MNIST at 16x16 (``:stage=source``), writes it as an NVlabs-layout pickle, converts it with
``python -m jgen.convert`` and fine-tunes it here on scikit-learn's digits (a different digit
style, 1,797 images: the target) against the same network from scratch (``:stage=scratch``),
same steps, seed and data; it prints the domain-FID table (docs/families/stylegan2_ada.md):

  python benchmarks/stylegan2_transfer.py --out /tmp/sg2_transfer
  python launch.py --config experiments/gan/stylegan2_transfer.py --workdir /tmp/sg2_tuned \
      --config.init_from.workdir=/tmp/sg2_transfer/converted      # the fine-tuning alone

Variants: ``stage=transfer`` (default: init_from a converted work directory,
``init_from.workdir``), ``stage=scratch`` (the same run from random weights), ``stage=source``
(the MNIST source run), ``paper`` (above), ``smoke`` (8x8, seconds).
"""

import ml_collections

from jgen.train.config import digits_data, experiment_module, parse_arg, smoke_schedule

_base = experiment_module("base", beside=__file__)
_sg2 = experiment_module("stylegan2_digits", beside=__file__)

ARGS = dict(stage=("transfer", "scratch", "source"), paper=False, smoke=False)
# The digits-sized network (source and target share it).
DIGITS_MODEL = dict(features=(32, 32, 16), z_dim=32, w_dim=32, mapping_layers=2, mbstd_group=4)
ADA_OPS = "xflip,rotate90,xint,scale,rotate,aniso,xfrac,brightness,contrast,saturation"


def reference_options(m: ml_collections.ConfigDict, *, conv_clamp: float = 256.0
                      ) -> ml_collections.ConfigDict:
  """The NVlabs network options (`jgen.nn.stylegan2`) in a `model` block."""
  m.resample = "exact"
  m.conv_clamp = conv_clamp
  m.noise_buffers = True
  m.d_flatten = "nchw"
  m.mapping_lr_mul = 0.01
  return m


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.gan_base(smoke=a.smoke)
  c.method = "gan.stylegan2"
  c.data.batch_size = 16
  c.model = reference_options(_sg2.model_config(**DIGITS_MODEL))
  _sg2.stylegan2_gan(c, r1_gamma=0.05)
  c.gan.num_classes = 0
  c.gan.ada = True
  c.gan.ada_target = 0.6
  c.gan.ada_interval = 4
  c.gan.ada_kimg = 100.0          # the reference's value when resuming
  c.gan.ada_ops = ADA_OPS

  c.init_from.workdir = "/tmp/stylegan2_transfer_source_converted"
  c.init_from.source = "params"   # G from G, D from D (the pickle's G_ema is the EMA there)
  c.init_from.subtree = ""
  c.init_from.into = "params"

  c.train.num_steps = 600
  c.train.ema_decay = 0.5 ** (16 / 10_000)   # half-life 10k images
  c.train.ema_warmup = False                 # the reference's ramp-up is off when resuming
  c.train.log_every = 50
  c.train.checkpoint_every = 600
  c.train.sample_every = 0
  c.eval.metrics = "fid"
  c.eval.num_samples = 1000

  if a.stage == "scratch":
    c.init_from.workdir = ""
  if a.stage == "source":
    c.init_from.workdir = ""
    c.data.source = "idx:/work/shared/data/mnist-test"
    c.data.split = "test"          # the offline copy holds MNIST's 10k test images
    c.gan.ada = False
    c.train.num_steps = 1500
    c.train.ema_decay = 0.999
    c.train.ema_warmup = True
    c.train.checkpoint_every = 1500

  if a.paper:
    c.data.source = "folder:metfaces"
    c.data.image_size = 1024
    c.data.channels = 3
    c.data.random_flip = True
    c.data.batch_size = 32
    c.model = reference_options(_sg2.model_config(
        features=tuple(min(32768 // (4 * 2**l), 512) for l in range(9)), z_dim=512, w_dim=512,
        mapping_layers=8, mbstd_group=4, conv="lax"))
    _sg2.stylegan2_gan(c, r1_gamma=2.0)
    c.optim.lr = 0.002
    c.train.num_steps = 31_250
    c.train.ema_decay = 0.5 ** (32 / 10_000)
    c.train.log_every = 100
    c.train.checkpoint_every = 1000
    c.eval.num_samples = 50_000
    c.eval.metrics = "fid"

  if a.smoke:
    digits_data(c, smoke=True)     # also :paper,smoke (a seconds-long run of its settings)
    c.data.random_flip = False
    c.model = reference_options(_sg2.model_config(features=(4, 4), z_dim=8, w_dim=8,
                                                  mapping_layers=2, mbstd_group=4))
    smoke_schedule(c, num_steps=2)
    c.eval.metrics = ""
  return c
