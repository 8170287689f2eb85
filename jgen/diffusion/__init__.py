"""Diffusion models: noise schedules, training losses and samplers."""

from jgen.diffusion.losses import ddpm_loss
from jgen.diffusion.samplers import (
    ddim_interpolate,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    slerp,
)
from jgen.diffusion.schedules import (
    Schedule,
    cosine_beta_schedule,
    get_schedule,
    linear_beta_schedule,
    make_schedule,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_posterior_mean_variance,
    q_sample,
)

__all__ = [
    "Schedule",
    "cosine_beta_schedule",
    "ddim_interpolate",
    "ddim_sample",
    "ddim_timesteps",
    "ddpm_loss",
    "ddpm_sample",
    "get_schedule",
    "linear_beta_schedule",
    "make_schedule",
    "predict_eps_from_x0",
    "predict_x0_from_eps",
    "q_posterior_mean_variance",
    "q_sample",
    "slerp",
]
