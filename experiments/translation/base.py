"""The base of the image-to-image experiments (pix2pix; CycleGAN and StarGAN read it).

Experiment files load this module by path (`experiment_module("base",
beside=__file__)`) and never each other. `pix2pix_base()` is the 16x16 edges -> digits setup;
the facades, maps and CIFAR-10 colorization configs start from it and scale data and networks.

Optimizers: `optim` is the generator's; `optim_d`, the discriminator's, follows `optim` in
every field it leaves None (`jgen.gan.adversarial.discriminator_optim`, as in base_gan.py).
"""

import ml_collections

from jgen.train.config import base_config, experiment_module

_gan = experiment_module("../gan/base", beside=__file__)


def pix2pix_base(*, smoke: bool = False) -> ml_collections.ConfigDict:
  """pix2pix on `derived:edges:digits` at 16x16: Sobel edges -> the digit.

  Networks: a U-Net with 4 downsamplings (16 -> 1x1 bottleneck), ngf 16, batch norm, dropout
  0.5 in its 3 decoder layers next to the bottleneck; a PatchGAN with n_layers 2, ndf 16:
  2x2 logits of 34x34 receptive fields (`patch_receptive_field(2)`), larger than the 16x16
  image, so at this size each logit judges the whole (zero-padded) pair. Objective: BCE on
  the patch logits (D's halved) + 100 L1; Adam(2e-4, 0.5, 0.999), no gradient clipping and no
  EMA (the paper's choices).
  """
  c = base_config()
  c.method = "gan.pix2pix"
  c.data.source = "derived:edges:digits"
  c.data.image_size = 16
  c.data.channels = 1
  c.data.resize = True
  c.data.batch_size = 32
  c.data.random_flip = False     # digits are not mirror-symmetric

  c.model.ngf = 16               # U-Net: 16-32-64-128 features, 16 -> 8 -> 4 -> 2 -> 1
  c.model.ndf = 16               # PatchGAN: 16-32-64 features, then 1
  c.model.num_downs = ml_collections.FieldReference(4, field_type=int)  # None: to 1x1
  c.model.n_layers = 2           # receptive field 34 (3: the paper's 70x70)
  c.model.g_norm = "batch"       # batch | instance | none
  c.model.d_norm = "batch"
  c.model.dropout = 0.5          # on at train and test time: G's noise
  c.model.dropout_placement = "bottleneck"  # | reference (pytorch-CycleGAN-and-pix2pix's)
  c.model.edge_bias = True       # False: no bias on a batch-norm U-Net's e_0 / bottleneck convs

  c.gan = ml_collections.ConfigDict()
  c.gan.loss = "non_saturating"  # BCE (the paper); least_squares | hinge | minimax
  c.gan.l1_weight = 100.0        # lambda
  c.gan.test_batch_stats = False  # True: each test image normalized by its own statistics

  c.optim.name = "adam"
  c.optim.lr = 2e-4
  c.optim.b1 = 0.5
  c.optim.b2 = 0.999
  c.optim.grad_clip_norm = 0.0
  c.optim_d = _gan.follow_optim()

  c.train.num_steps = 3000
  c.train.ema_decay = 0.0        # 0: translate with the trained G (the paper averages nothing)
  c.train.ema_warmup = False
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.sample_every = 1000
  c.train.eval_every = 1000
  c.train.eval_batches = 4

  c.sample.num = 32              # held-out sources translated into each grid
  c.sample.batch_size = 32
  if smoke:
    c.data.batch_size = 4
    c.model.ngf = 4
    c.model.ndf = 4
    c.train.num_steps = 3
    c.train.log_every = 1
    c.train.checkpoint_every = 3
    c.train.sample_every = 3
    c.train.eval_every = 3
    c.train.eval_batches = 1
    c.sample.num = 4
    c.sample.batch_size = 4
  return c


def paper_pix2pix(c: ml_collections.ConfigDict, *, source: str, train_images: int,
                  epochs: int = 200) -> ml_collections.ConfigDict:
  """`c` with the paper's 256x256 settings: batch 1, `epochs` epochs of `train_images` pairs
  as steps, U-Net 8 downs (ngf 64), 70x70 PatchGAN (n_layers 3, ndf 64), batch norm (at batch
  size 1 the paper's instance-like normalization; each test image is normalized by its own
  statistics, `gan.test_batch_stats`), mirroring, and the reference code's learning rate:
  constant for the first half of the epochs, then linear to 0 (`optim.schedule = "linear"`).
  Not reproduced: the random jitter (resize to 286, random 256 crop)."""
  c.data.source = source
  c.data.image_size = 256
  c.data.channels = 3
  c.data.resize = True
  c.data.batch_size = 1
  c.data.random_flip = True
  c.model.ngf = 64
  c.model.ndf = 64
  c.model.num_downs = 8
  c.model.n_layers = 3
  c.gan.test_batch_stats = True
  c.train.num_steps = epochs * train_images
  c.optim.schedule = "linear"
  c.optim.decay_from = 0.5
  c.train.log_every = 500
  c.train.checkpoint_every = 5000
  c.train.sample_every = 5000
  c.train.eval_every = 0
  c.sample.num = 16
  c.sample.batch_size = 8
  return c


def shrink_paper_config(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A seconds-long run of a 256x256 paper config on the same data: 32x32, tiny networks."""
  c.data.image_size = 32
  c.data.batch_size = 2
  c.model.ngf = 4
  c.model.ndf = 4
  c.model.num_downs = 5
  c.model.n_layers = 2
  c.train.num_steps = 8
  c.train.log_every = 2
  c.train.checkpoint_every = 8
  c.train.sample_every = 8
  c.sample.num = 2
  c.sample.batch_size = 2
  return c
