"""DDPM on scikit-learn's bundled 8x8 digits, resized to 16x16: the CPU quickstart.

  python launch.py --config experiments/ddpm_digits.py --workdir /tmp/ddpm_digits

Trains on 2 CPU cores in a few minutes and writes a grid of recognizable digits to
WORKDIR/samples/. Variant `:smoke` is a seconds-long run used by the tests.
"""

import ml_collections

from jgen.train.config import experiment_module

_base = experiment_module("base_ddpm", beside=__file__)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = _base.get_config()

  c.data.source = "digits"
  c.data.image_size = 16
  c.data.channels = 1
  c.data.resize = True
  c.data.batch_size = 64

  c.model.ch = 16
  c.model.ch_mult = (1, 2, 4)
  c.model.num_res_blocks = 1
  c.model.attn_resolutions = (8,)
  c.model.dropout = 0.0
  c.model.num_groups = 8

  c.optim.lr = 2e-3
  c.optim.warmup_steps = 100
  c.optim.schedule = "cosine"
  c.optim.grad_clip_norm = 1.0

  c.train.num_steps = 1000
  c.train.ema_decay = 0.995
  c.train.ema_warmup = True
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.train.sample_every = 500
  c.train.eval_every = 500
  c.train.eval_batches = 4

  if arg == "smoke":
    c.data.image_size = 8
    c.data.batch_size = 8
    c.model.ch = 8
    c.model.ch_mult = (1, 2)
    c.model.attn_resolutions = (4,)
    c.model.num_groups = 4
    c.diffusion.num_timesteps = 20
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"
    c.train.num_steps = 6
    c.train.log_every = 2
    c.train.checkpoint_every = 3
    c.train.sample_every = 0
    c.train.eval_every = 3
    c.train.eval_batches = 1
    c.sample.steps = 5
    c.sample.num = 8
    c.sample.batch_size = 8
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of ddpm_digits; use 'smoke'")
  return c
