"""Progressive distillation of the digits quickstart DDPM (trained with v-prediction) to 4 steps.

  python launch.py --config experiments/ddpm/digits.py --workdir /tmp/ddpm_digits_v \
      --config.diffusion.prediction=v
  python launch.py --config experiments/distill/progressive_digits.py \
      --workdir /tmp/distill_digits \
      --config.init_from.workdir=/tmp/ddpm_digits_v
  # continue the same run to 2 and then 1 step (the rounds are already scheduled):
  python launch.py --config experiments/distill/progressive_digits.py \
      --workdir /tmp/distill_digits \
      --config.init_from.workdir=/tmp/ddpm_digits_v --config.train.num_steps=3600
  python launch.py --config experiments/distill/progressive_digits.py \
      --workdir /tmp/distill_digits \
      --mode=sample --config.sample.steps=4

`diffusion.progressive_distillation`: the teacher's EMA U-Net is frozen in
``state.frozen["teacher"]`` (architecture, T = 1000 linear betas and its v-prediction read from
its run record), the student starts from it and learns two teacher DDIM steps in one with the
truncated-SNR weighting max(SNR, 1) on the x error. Rounds of 600 updates halve the student's
steps 32 -> 16 -> 8 -> 4 (the first teacher samples with 64 DDIM steps); ``train.num_steps``
= 2400 stops after the 4-step round, and the schedule holds two more rounds (2, 1 steps:
``--config.train.num_steps=3600`` resumes into them). Per round, as in the paper: a fresh Adam
state, the learning rate annealed linearly to 0 over the round (from 3e-4 here: the paper's
5e-5 is for a 50k-update round), gradient clipping at 1, no EMA, no dropout. Batch 64 of
16x16 digits, as the teacher. ``sample.steps = 0`` samples with the distilled N of the
checkpoint (4 after 2400 updates). ``init_from.workdir`` defaults to the /tmp/ddpm_digits_v of
the commands above. `:smoke` is the tests' seconds-long run (8x8, rounds 4 -> 2 -> 1 of 2
updates) on a ddpm_digits:smoke teacher trained with v.
"""

import ml_collections

from jgen.train.config import base_config, parse_arg

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke = a.smoke
  c = base_config()
  c.method = "diffusion.progressive_distillation"

  c.data.source = "digits"
  c.data.image_size = 8 if smoke else 16  # the teacher's
  c.data.channels = 1
  c.data.resize = True
  c.data.batch_size = 8 if smoke else 64

  c.init_from.workdir = "/tmp/ddpm_digits_v"
  c.init_from.into = "frozen/teacher"
  c.init_from.source = "ema"

  # Distillation settings (the teacher's schedule and architecture come from its run record).
  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.start_steps = 4 if smoke else 32   # N_0: the first student's steps (teacher: 2 N_0)
  c.diffusion.final_steps = 1                    # the last scheduled round's N
  c.diffusion.steps_per_round = 2 if smoke else 600
  c.diffusion.prediction = "v"                   # the student's: v | x0
  c.diffusion.weighting = "truncated_snr"        # max(SNR, 1) | snr_plus_one
  c.diffusion.clip_teacher = False               # clip the teacher's x in the targets

  c.model.dropout = 0.0                          # the student's (the paper's students: none)

  c.optim.name = "adam"
  c.optim.lr = 3e-4
  c.optim.schedule = "linear"                    # annealed to 0 over each round
  c.optim.decay_from = 0.0
  c.optim.warmup_steps = 0
  c.optim.grad_clip_norm = 1.0

  c.train.num_steps = 6 if smoke else 2400       # rounds 32, 16, 8, 4 (smoke: 4, 2, 1)
  c.train.ema_decay = 0.0                        # no EMA (the paper's distillation)
  c.train.log_every = 2 if smoke else 100
  c.train.checkpoint_every = 2 if smoke else 600  # the end of every round
  c.train.keep_checkpoints = 4 if smoke else 8
  c.train.sample_every = 0 if smoke else 600
  c.train.eval_every = 0 if smoke else 600
  c.train.eval_batches = 1 if smoke else 4

  c.sample.steps = 0               # 0: the distilled N of the checkpoint; K > 0: K DDIM steps
  c.sample.clip_denoised = True
  c.sample.num = 8 if smoke else 64
  c.sample.batch_size = 8 if smoke else 64
  return c
