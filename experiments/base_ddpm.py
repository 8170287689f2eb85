"""The DDPM family's base: the noise process, the loss and the sampler defaults.

Every DDPM experiment (ddpm_digits, ddpm_cifar) starts from `get_config()` and sets its data,
network, optimizer and schedule; no experiment file loads another. Loaded by path:
`experiment_module("base_ddpm", beside=__file__)`.
"""

import ml_collections

from jgen.train.config import base_config


def get_config() -> ml_collections.ConfigDict:
  """DDPM with Ho et al.'s linear betas (T = 1000), the simple loss, Adam and 50-step DDIM."""
  c = base_config()
  c.method = "diffusion.ddpm"

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.schedule = "linear"
  c.diffusion.num_timesteps = 1000
  c.diffusion.beta_start = 1e-4
  c.diffusion.beta_end = 0.02
  c.diffusion.loss_type = "mse"

  c.optim.name = "adam"

  c.sample.sampler = "ddim"        # or "ddpm" (ancestral, num_timesteps steps)
  c.sample.steps = 50
  c.sample.eta = 0.0
  c.sample.spacing = "uniform"
  c.sample.clip_denoised = True
  c.sample.num = 64
  c.sample.batch_size = 64
  return c
