"""Consistency distillation (Song et al. 2023) of the quickstart DDPM, trained with v-prediction.

  python launch.py --config experiments/ddpm/digits.py --workdir /tmp/ddpm_digits_v \
      --config.diffusion.prediction=v
  python launch.py --config experiments/distill/cd_digits.py --workdir /tmp/cd_digits \
      --config.init_from.workdir=/tmp/ddpm_digits_v
  python launch.py --config experiments/distill/cd_digits.py --workdir /tmp/cd_digits \
      --mode=sample --config.sample.steps=2

The teacher's EMA U-Net is frozen in ``state.frozen["teacher"]`` (its architecture and schedule
rebuilt from its run record); the student is the same U-Net, initialized with the teacher's
weights (``consistency.student_init``; 'scratch' for a random start) and read as a consistency
function with sigma_data = 1, the teacher's fractional DDPM timestep as time input and a
v-output (a v-prediction DDPM is EDM's preconditioning with sigma_data = 1, so the student
starts as the teacher's denoiser, as the paper's students start as their EDM teachers). N = 18
Karras levels (rho 7, sigma in [0.002, 80]), one Heun step of the teacher per example, target
EMA mu = 0.95, sampling EMA 0.999; pseudo-Huber distance (c = 0.00054 sqrt(256)), the stand-in
of digits-sized images (the paper's CIFAR-10 CD uses LPIPS-VGG on images upsampled to 224, as
experiments/distill/cd_cifar.py does; ``--config.consistency.distance=lpips`` here). ``:smoke``
is the
tests' seconds-long run (its teacher: a ddpm_digits:smoke run with v-prediction and T = 1000).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base_consistency", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke = a.smoke
  c = _base.digits("cd", smoke=smoke)
  c.init_from.workdir = "/tmp/ddpm_digits_v"
  c.consistency.sigma_data = 1.0
  c.consistency.time_input = "ddpm"
  c.consistency.net_output = "v"
  c.consistency.student_init = "teacher"
  c.optim.lr = 2e-4
  if not smoke:
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"
    c.train.num_steps = 1500
    c.train.checkpoint_every = 500
  return c
