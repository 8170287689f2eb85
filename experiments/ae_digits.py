"""Autoencoder on scikit-learn's 8x8 digits resized to 16x16: a 16-d vector bottleneck.

  python launch.py --config experiments/ae_digits.py --workdir /tmp/ae_digits
  python launch.py --config experiments/ae_digits.py --workdir /tmp/ae_digits --mode=eval
  python launch.py --config experiments/ae_digits.py --workdir /tmp/ae_digits --mode=sample

`--mode=sample` writes held-out digits side by side with their reconstructions. Variants:
`:mae` (L1 reconstruction), `:smoke` (a seconds-long run for the tests).
"""

import ml_collections

from jgen.train.config import base_config


def autoencoder_base(arg: str | None) -> ml_collections.ConfigDict:
  """Data, network, optimizer and schedule shared by the digits autoencoder configs."""
  c = base_config()
  c.data.source = "digits"
  c.data.image_size = 16
  c.data.channels = 1
  c.data.resize = True
  c.data.batch_size = 64

  c.model.ch = 16
  c.model.ch_mult = (1, 2, 2)
  c.model.num_res_blocks = 1
  c.model.num_groups = 4
  c.model.dropout = 0.0
  c.model.spatial = False
  c.model.latent_dim = 16

  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 50
  c.optim.schedule = "cosine"
  c.optim.grad_clip_norm = 0.0

  c.train.num_steps = 1500
  c.train.ema_decay = 0.99
  c.train.ema_warmup = True
  c.train.log_every = 100
  c.train.checkpoint_every = 1500
  c.train.eval_every = 500
  c.train.eval_batches = 5
  c.train.sample_every = 0

  c.sample.num = 64
  c.sample.batch_size = 64
  if arg == "smoke":
    c.data.image_size = 8
    c.data.batch_size = 8
    c.model.ch = 8
    c.model.ch_mult = (1, 2)
    c.model.num_res_blocks = 0  # compile time dominates the tests (blocks: test_networks)
    c.model.num_groups = 4
    c.model.latent_dim = 4
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.checkpoint_every = 4
    c.train.eval_every = 4
    c.train.eval_batches = 1
    c.sample.num = 8
    c.sample.batch_size = 8
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = autoencoder_base("smoke" if arg == "smoke" else None)
  c.method = "autoencoder.ae"
  c.ae = ml_collections.ConfigDict()
  c.ae.loss = "mae" if arg == "mae" else "mse"
  c.ae.corruption = "none"
  c.ae.corruption_level = 0.0
  if arg not in (None, "smoke", "mae"):
    raise ValueError(f"unknown variant {arg!r} of ae_digits; use 'mae' or 'smoke'")
  return c
