"""What DreamBooth and textual inversion of the digits model share (`jgen.diffusion.personalize`).

The base is experiments/ddpm/cond_digits.py (the model, schedule and sampler come from it, and
its trained run comes in through --config.init_from.workdir). The subject: the first four
MNIST 7s of the real MNIST test set in ../shared (thin, sharp strokes, unlike the base's blurry
8x8 scans), resized to 16x16; the identifier is label 10 ("a [V] 7"); samples of it with
--config.sample.labels=10. `:smoke` uses four bundled 8x8 digits 7s instead (no ../shared).
"""

import ml_collections

from jgen.train.config import experiment_module

_cond = experiment_module("../ddpm/cond_digits", beside=__file__)

MNIST_TEST = "idx:../shared/data/mnist-test"


def config(method: str, smoke: bool) -> ml_collections.ConfigDict:
  c = _cond.get_config("smoke" if smoke else None)
  c.method = method
  if not smoke:
    c.data.source = MNIST_TEST
    c.data.split = "test"       # the MNIST copy in ../shared is its 10k test set
    c.data.eval_split = "test"
  c.data.train_labels = "7"
  c.data.train_examples = 4
  c.data.batch_size = 4
  c.data.random_flip = False
  c.personalize = ml_collections.ConfigDict()
  c.personalize.subject_class = 7
  c.personalize.prior_weight = 1.0
  c.personalize.num_class_images = 8 if smoke else 100
  c.personalize.prior_batch = 4
  c.personalize.class_seed = 0
  c.diffusion.cond_drop_prob = 0.0  # the null row stays the base's (guidance's reference)
  c.optim.warmup_steps = 0
  c.optim.schedule = "constant"
  c.train.ema_decay = 0.99
  c.train.ema_warmup = False
  c.train.eval_every = 0
  c.train.sample_every = 0
  if not smoke:  # the quickstart's finding: stochastic DDIM drops the base's noisy samples
    c.sample.eta = 1.0
    c.sample.steps = 100
  c.sample.labels = "10"
  c.sample.num = 8 if smoke else 64
  c.sample.batch_size = 8 if smoke else 64
  return c


def text_base(c: ml_collections.ConfigDict, *, lr: float, rules) -> ml_collections.ConfigDict:
  """What the methods that adapt a trained text latent diffusion run share (IP-Adapter, Imagic,
  Perfusion, Face0): the run comes in through ``init_from.base`` (its EMA weights into params;
  --config.init_from.base.workdir names it), the rules say what trains, Adam at `lr`, constant."""
  c.init_from.base = ml_collections.ConfigDict()
  c.init_from.base.workdir = ""
  c.init_from.base.into = "params"
  c.init_from.base.source = "ema"
  c.optim.rules = rules
  c.optim.lr = lr
  c.optim.warmup_steps = 0
  c.optim.schedule = "constant"
  return c
