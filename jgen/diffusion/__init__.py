"""Diffusion models: noising processes, training losses, parameterizations, samplers.

The processes (`jgen.ops.processes`: `VP`, `VE`, `EDM`, `Linear`, and DDPM's discrete chain
`jgen.ops.schedules.Schedule`) are re-exported here; they sit below the families because DDGAN
(`jgen.gan.ddgan`) runs the discrete chain. Samplers by name: `sampler_table.SAMPLERS`.
"""

from jgen.diffusion.classifier_guidance import (
    classifier_grad_fn,
    classifier_guided_ddpm_sample,
    classifier_guided_eps_fn,
    classifier_log_prob_grad,
)
from jgen.diffusion.guidance import cfg_eps_fn, concat_conditions
from jgen.diffusion.losses import ddpm_loss
from jgen.diffusion.parameterization import (
    PREDICTIONS,
    alpha_sigma,
    convert_prediction,
    eps_mse_weight,
    predict_eps,
    predict_x0,
    sigma_to_timestep,
    snr,
    timestep_to_sigma,
    to_eps_fn,
    to_x0_fn,
    training_target,
    v_target,
)
from jgen.diffusion.ode import ode_sample, ode_times
from jgen.diffusion.sampler_table import SAMPLERS, run_sampler
from jgen.diffusion.samplers import (
    ddim_interpolate,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    slerp,
)
from jgen.diffusion.solvers import (
    DPM_SPACINGS,
    dpm_timesteps,
    dpmpp_2m_sample,
    edm_sample,
    euler_sample,
    heun_sample,
    karras_sigmas,
    schedule_sigmas,
)
from jgen.ops.processes import EDM, VE, VP, Linear, Process
from jgen.ops.schedules import (
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
    "EDM",
    "Linear",
    "Process",
    "SAMPLERS",
    "VE",
    "VP",
    "edm_sample",
    "ode_sample",
    "ode_times",
    "run_sampler",
    "cfg_eps_fn",
    "concat_conditions",
    "classifier_grad_fn",
    "classifier_guided_ddpm_sample",
    "classifier_guided_eps_fn",
    "classifier_log_prob_grad",
    "PREDICTIONS",
    "alpha_sigma",
    "convert_prediction",
    "eps_mse_weight",
    "predict_eps",
    "predict_x0",
    "sigma_to_timestep",
    "snr",
    "timestep_to_sigma",
    "to_eps_fn",
    "to_x0_fn",
    "training_target",
    "v_target",
    "DPM_SPACINGS",
    "dpm_timesteps",
    "dpmpp_2m_sample",
    "euler_sample",
    "heun_sample",
    "karras_sigmas",
    "schedule_sigmas",
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
