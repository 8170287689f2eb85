"""The base of every CycleGAN experiment (`jgen.gan.cyclegan`): the paper's settings.

Experiment files load this module by path (`experiment_module("base_cyclegan", beside=__file__)`)
and never each other. `cyclegan_base()` holds Zhu et al. (2017)'s choices: ResNet generators
(`model.ngf` 64, `model.n_blocks` 9 at 256 px, 6 at 128 px), 70x70 PatchGAN discriminators
(`model.ndf` 64, `model.d_layers` 3), instance norm in all four networks, least-squares GAN
loss, cycle weight 10, identity weight 0.5 (relative to it), history buffers of 50 fakes,
Adam 2e-4 (0.5, 0.999) at a constant rate for the first half of the steps and then linear to
zero (`optim.schedule = "linear"`, `optim.decay_from` = 0.5: half of the steps), batch
1, no EMA (the paper translates with the generators as trained; set `train.ema_decay` to
average both generators) and no gradient clipping.

`sample.direction` ("AtoB" | "BtoA") is the translation `--mode=sample` writes and its eval
reports; `evaluate` measures both directions.
"""

import ml_collections

from jgen.train.config import base_config


def cyclegan_base(*, smoke: bool = False) -> ml_collections.ConfigDict:
  """The paper's CycleGAN config at 256 px (data source left to the experiment)."""
  c = base_config()
  c.method = "gan.cyclegan"
  c.data.image_size = 256
  c.data.channels = 3
  c.data.resize = True
  c.data.batch_size = 1
  c.data.random_flip = True

  c.model.ngf = 64
  c.model.n_blocks = 9
  c.model.g_norm = "instance"
  c.model.upsample = "resize"        # resize | transpose (the reference's transposed convs)
  c.model.down_padding = "reflect"   # reflect | zero (the reference's stride-2 convs)
  c.model.ndf = 64
  c.model.d_layers = 3
  c.model.d_norm = "instance"

  c.gan = ml_collections.ConfigDict()
  c.gan.loss = "least_squares"       # least_squares (LSGAN, the paper's) | non_saturating
  c.gan.cycle_weight = 10.0          # lambda
  c.gan.identity_weight = 0.5        # lambda_idt, relative to lambda; 0 turns it off
  c.gan.history_size = 50            # fakes in each discriminator's buffer; 0: latest only

  c.optim.name = "adam"
  c.optim.lr = 2e-4
  c.optim.b1 = 0.5
  c.optim.b2 = 0.999
  c.optim.grad_clip_norm = 0.0
  c.optim.schedule = "linear"      # constant, then linear to 0 from the fraction decay_from
  c.optim.decay_from = 0.5

  c.train.num_steps = 200 * 1067     # 200 epochs of horse2zebra's 1,067 horses at batch 1
  c.train.ema_decay = 0.0
  c.train.ema_warmup = False
  c.train.log_every = 100
  c.train.checkpoint_every = 10_000
  c.train.sample_every = 10_000
  c.train.eval_every = 0

  c.sample.direction = "AtoB"
  c.sample.num = 16
  c.sample.batch_size = 16
  if smoke:
    c.data.image_size = 8
    c.data.batch_size = 2
    c.model.ngf = 4
    c.model.n_blocks = 1
    c.model.ndf = 4
    c.model.d_layers = 1
    c.gan.history_size = 3
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.checkpoint_every = 4
    c.train.sample_every = 0
    c.train.eval_every = 4
    c.train.eval_batches = 1
    c.sample.num = 4
    c.sample.batch_size = 4
  return c
