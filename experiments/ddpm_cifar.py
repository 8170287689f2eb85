"""DDPM on CIFAR-10: the setup of Ho et al. 2020 (35.7M-parameter U-Net, T=1000, linear betas).

  python launch.py --config experiments/ddpm_cifar.py --workdir /tmp/ddpm_cifar
  # from local files instead of tensorflow-datasets:
  python launch.py --config experiments/ddpm_cifar.py --workdir /tmp/ddpm_cifar \
      --config.data.source=folder:../shared/data/cifar10-jpeg.zip
  # variants: experiments/ddpm_cifar.py:bf16 (bfloat16 compute, GPU/TPU), :smoke (tiny, CPU)
"""

import ml_collections

from jgen.train.config import experiment_module

_base = experiment_module("base_ddpm", beside=__file__)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = _base.get_config()

  c.data.source = "tfds:cifar10"
  c.data.image_size = 32
  c.data.channels = 3
  c.data.batch_size = 128
  c.data.random_flip = True

  c.model.ch = 128
  c.model.ch_mult = (1, 2, 2, 2)
  c.model.num_res_blocks = 2
  c.model.attn_resolutions = (16,)
  c.model.dropout = 0.1
  c.model.num_groups = 32

  c.optim.lr = 2e-4
  c.optim.warmup_steps = 5000
  c.optim.grad_clip_norm = 1.0

  c.train.num_steps = 800_000
  c.train.ema_decay = 0.9999
  c.train.log_every = 100
  c.train.checkpoint_every = 10_000
  c.train.sample_every = 50_000
  c.train.eval_every = 10_000

  if arg == "bf16":
    c.model.dtype = "bfloat16"
  elif arg == "smoke":
    c.data.batch_size = 8
    c.model.ch = 32
    c.model.ch_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.num_groups = 8
    c.diffusion.num_timesteps = 100
    c.optim.warmup_steps = 10
    c.train.num_steps = 20
    c.train.log_every = 5
    c.train.checkpoint_every = 10
    c.train.sample_every = 0
    c.train.eval_every = 0
    c.sample.steps = 10
    c.sample.num = 16
    c.sample.batch_size = 16
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of ddpm_cifar; use 'bf16' or 'smoke'")
  return c
