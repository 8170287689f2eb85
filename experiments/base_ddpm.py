"""The DDPM family's base: the noise process, the loss and the sampler defaults.

Every DDPM experiment (ddpm_digits, ddpm_cifar, ddpm_cond_digits, ddpm_cond_cifar) starts from
`get_config()` and sets its data, network, optimizer and schedule; no experiment file loads
another. Loaded by path:
`experiment_module("base_ddpm", beside=__file__)`.
"""

import ml_collections

from jgen.train.config import base_config


def get_config() -> ml_collections.ConfigDict:
  """DDPM with Ho et al.'s linear betas (T = 1000), the simple loss, Adam and 50-step DDIM.

  Unconditional eps-prediction by default; `model.num_classes > 0` makes it class-conditional
  with classifier-free guidance (`diffusion.cond_drop_prob`, `sample.guidance_scale`).
  """
  c = base_config()
  c.method = "diffusion.ddpm"

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.schedule = "linear"
  c.diffusion.num_timesteps = 1000
  c.diffusion.beta_start = 1e-4
  c.diffusion.beta_end = 0.02
  c.diffusion.loss_type = "mse"
  c.diffusion.prediction = "eps"   # what the network predicts: eps | x0 | v
  c.diffusion.cond_drop_prob = 0.1  # conditional models: P(label -> null class) in training (CFG)

  c.model.num_classes = 0          # > 0: class-conditional U-Net (label + null embedding)

  c.optim.name = "adam"

  c.sample.sampler = "ddim"        # ddpm (ancestral, num_timesteps steps) | ddim | dpmpp_2m
                                   # | euler | heun
  c.sample.steps = 50              # every sampler but ddpm
  c.sample.eta = 0.0               # ddim
  c.sample.spacing = "uniform"     # ddim: uniform | quadratic
  c.sample.dpm_spacing = "linspace"  # dpmpp_2m: linspace | leading | trailing
  c.sample.rho = 7.0               # euler, heun: Karras sigma-grid exponent
  c.sample.guidance_scale = 1.0    # conditional models: CFG w (1 = conditional, 0 = uncond.)
  c.sample.clip_denoised = True
  c.sample.num = 64
  c.sample.batch_size = 64
  return c
