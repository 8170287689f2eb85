"""Class-conditional DDPM with classifier-free guidance on CIFAR-10, for a GPU.

  python launch.py --config experiments/ddpm_cond_cifar.py --workdir /tmp/ddpm_cond_cifar
  # from local files instead of tensorflow-datasets:
  python launch.py --config experiments/ddpm_cond_cifar.py --workdir /tmp/ddpm_cond_cifar \
      --config.data.source=folder:../shared/data/cifar10-jpeg.zip
  # variants: :bf16 (bfloat16 compute), :v (v-prediction), :smoke (tiny, CPU)

Ho et al.'s 35.7M-parameter DDPM U-Net and schedule (as ddpm_cifar) with a 10-class label
embedding (+ the null class) added to the timestep embedding; labels are dropped to the null
class with probability 0.1 (Ho & Salimans 2022 found 0.1-0.2 best) and samples use guidance
scale w = 2 (their w' = 1; 1 = plain conditional, 0 = unconditional) with 50-step DDIM. Sweep
`--config.sample.guidance_scale` in `--mode=sample` for the FID / IS trade-off. 400k steps
(half ddpm_cifar's: guidance makes up sample quality); raise train.num_steps for the full run.
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
  c.model.num_classes = 10

  c.diffusion.cond_drop_prob = 0.1

  c.optim.lr = 2e-4
  c.optim.warmup_steps = 5000
  c.optim.grad_clip_norm = 1.0

  c.train.num_steps = 400_000
  c.train.ema_decay = 0.9999
  c.train.log_every = 100
  c.train.checkpoint_every = 10_000
  c.train.sample_every = 50_000
  c.train.eval_every = 10_000

  c.sample.guidance_scale = 2.0
  c.sample.num = 100               # a 10x10 grid: each row the 10 classes
  c.sample.batch_size = 100

  if arg == "bf16":
    c.model.dtype = "bfloat16"
  elif arg == "v":
    c.diffusion.prediction = "v"
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
    c.sample.num = 20
    c.sample.batch_size = 20
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of ddpm_cond_cifar; use 'bf16', 'v' or 'smoke'")
  return c
