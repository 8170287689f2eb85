"""Progressive distillation on CIFAR-10 (Salimans & Ho 2022; FID 3.0 at 4 steps), for a GPU.

  python launch.py --config experiments/ddpm/cifar.py --workdir /tmp/ddpm_cifar_v \
      --config.diffusion.prediction=v
  python launch.py --config experiments/distill/progressive_cifar.py --workdir /tmp/distill_cifar \
      --config.init_from.workdir=/tmp/ddpm_cifar_v
  python launch.py --config experiments/distill/progressive_cifar.py --workdir /tmp/distill_cifar \
      --mode=sample --config.sample.num=50000 --config.sample.batch_size=500
  # variants: :bf16 (bfloat16 compute), :smoke (seconds, on a ddpm_cifar:smoke teacher)

The paper's settings (google-research/diffusion_distillation, config/cifar10_distill.py) and
what this file keeps:

* rounds: 50,000 updates per halving (kept), from a 8192-step teacher sampler down to 1 step.
  Here the teacher is a discrete T = 1000 DDPM (ddpm_cifar: Ho et al.'s 35.7M U-Net, linear
  betas) instead of the paper's continuous-time cosine-logSNR model, and a teacher grid of 2 N_0
  steps cannot be finer than its T timesteps: the first student takes N_0 = 256 steps (teacher:
  512 DDIM steps), then 128, ..., 1: 9 rounds, 450k updates (the paper: 13 rounds).
* loss: truncated-SNR weighting max(SNR, 1) on the x error (``snr_trunc``; kept), targets from
  two unclipped teacher DDIM steps (kept).
* parameterization: the paper's CIFAR student predicts x (``mean_type='x'``) because its teacher
  did; a student here keeps its teacher's parameterization (it starts from the teacher's
  weights), v by default. For the paper's, train the teacher with
  --config.diffusion.prediction=x0 and set --config.diffusion.prediction=x0.
* architecture: the paper's own U-Net (ch 256, ch_mult (1, 1, 1), 3 blocks, attention at 8 and
  16, emb 1024) is not ddpm_cifar's; the student here is the teacher's architecture (from its run
  record) with dropout 0 (kept: "same as teacher but with 0 dropout").
* optimizer: Adam, lr 5e-5 annealed linearly to 0 over each round, no warm-up, gradient clipping
  at 1, no weight decay, no EMA (``ema_decay=0``), batch 128, random flips (all kept); a fresh
  optimizer state every round.
* sampling: deterministic DDIM at the distilled N with x clipped to [-1, 1] (kept).
"""

import ml_collections

from jgen.train.config import base_config, parse_arg

ARGS = dict(bf16=False, smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke = a.smoke
  c = base_config()
  c.method = "diffusion.progressive_distillation"

  c.data.source = "tfds:cifar10"
  c.data.image_size = 32
  c.data.channels = 3
  c.data.batch_size = 8 if smoke else 128
  c.data.random_flip = True

  c.init_from.workdir = "/tmp/ddpm_cifar_v"
  c.init_from.into = "frozen/teacher"
  c.init_from.source = "ema"

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.start_steps = 8 if smoke else 256   # ddpm_cifar:smoke has T = 100
  c.diffusion.final_steps = 1
  c.diffusion.steps_per_round = 2 if smoke else 50_000
  c.diffusion.prediction = "v"
  c.diffusion.weighting = "truncated_snr"
  c.diffusion.clip_teacher = False

  c.model.dropout = 0.0
  if a.bf16:
    c.model.dtype = "bfloat16"

  c.optim.name = "adam"
  c.optim.lr = 5e-5
  c.optim.schedule = "linear"
  c.optim.decay_from = 0.0
  c.optim.warmup_steps = 0
  c.optim.grad_clip_norm = 1.0

  c.train.num_steps = 8 if smoke else 450_000     # 9 rounds: 256 -> 1 steps
  c.train.ema_decay = 0.0
  c.train.log_every = 2 if smoke else 100
  c.train.checkpoint_every = 2 if smoke else 10_000
  c.train.keep_checkpoints = 10                   # the end of every round is a 50k multiple
  c.train.sample_every = 0 if smoke else 50_000
  c.train.eval_every = 0 if smoke else 10_000
  c.train.eval_batches = 1 if smoke else 4

  c.sample.steps = 0               # the distilled N of the checkpoint
  c.sample.clip_denoised = True
  c.sample.num = 16 if smoke else 64
  c.sample.batch_size = 16 if smoke else 64
  return c
