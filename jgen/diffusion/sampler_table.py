"""Every sampler of `jgen.diffusion` by name: the one place a method's `sample.sampler` is
looked up.

Each takes `(model_fn, process, rng, shape, *, prediction, clip_denoised, ...)`; `OPTIONS`
names the keyword options each reads from a method's sampling options (the option names are
the config's `sample.*` keys), and `TAGS` how output files name them.

| name | process | steps | module |
|---|---|---|---|
| ddpm | DDPM's chain | all T, ancestral | `samplers` |
| ddim | DDPM's chain | any, eta | `samplers` |
| dpmpp_2m | DDPM's chain | any | `solvers` |
| euler, heun | finite sigma_max | any, Karras grid | `solvers` |
| edm | finite sigma_max | any, Karras grid, churn | `solvers` |
| ode_euler, ode_heun, ode_midpoint | any | any, shifted uniform t | `ode` |
| sde_euler | any | any, shifted uniform t; Euler-Maruyama on the reverse SDE | `ode` |
"""

import functools
from typing import Any, Callable, Sequence

import jax

from jgen.diffusion.ode import ode_sample, sde_sample
from jgen.diffusion.samplers import ddim_sample, ddpm_sample
from jgen.diffusion.solvers import dpmpp_2m_sample, edm_sample, euler_sample, heun_sample
from jgen.ops.processes import Process
from jgen.ops.schedules import Schedule

Sampler = Callable[..., jax.Array]

SAMPLERS: dict[str, Sampler] = {
    "ddpm": ddpm_sample,
    "ddim": ddim_sample,
    "dpmpp_2m": dpmpp_2m_sample,
    "euler": euler_sample,
    "heun": heun_sample,
    "edm": edm_sample,
    "ode_euler": functools.partial(ode_sample, method="euler"),
    "ode_heun": functools.partial(ode_sample, method="heun"),
    "ode_midpoint": functools.partial(ode_sample, method="midpoint"),
    "sde_euler": sde_sample,
}

_ODE = {"steps": "steps", "shift": "shift"}
# sampler keyword -> option name, per sampler.
OPTIONS: dict[str, dict[str, str]] = {
    "ddpm": {},
    "ddim": {"steps": "steps", "eta": "eta", "spacing": "spacing"},
    "dpmpp_2m": {"steps": "steps", "spacing": "dpm_spacing"},
    "euler": {"steps": "steps", "rho": "rho"},
    "heun": {"steps": "steps", "rho": "rho"},
    "edm": {"steps": "steps", "rho": "rho", "s_churn": "s_churn", "s_tmin": "s_tmin",
            "s_tmax": "s_tmax", "s_noise": "s_noise"},
    "ode_euler": _ODE, "ode_heun": _ODE, "ode_midpoint": _ODE, "sde_euler": _ODE,
}

_ODE_TAG = "{name}{steps}_shift{shift:g}"
TAGS: dict[str, str] = {
    "ddpm": "ddpm{num_timesteps}",
    "ddim": "ddim{steps}_eta{eta:g}_{spacing}",
    "dpmpp_2m": "dpmpp2m{steps}_{dpm_spacing}",
    "euler": "euler{steps}_rho{rho:g}",
    "heun": "heun{steps}_rho{rho:g}",
    "edm": "edm{steps}_rho{rho:g}_churn{s_churn:g}",
    "ode_euler": _ODE_TAG, "ode_heun": _ODE_TAG, "ode_midpoint": _ODE_TAG,
    "sde_euler": _ODE_TAG,
}


DISCRETE = ("ddpm", "ddim", "dpmpp_2m")  # DDPM's chain only
SIGMA_SPACE = ("euler", "heun", "edm")  # a finite sigma_max


def check_sampler(name: str, process: Process | None = None) -> None:
  """Raises ValueError if `name` is not a sampler, or (given a process) cannot sample it:
  before any compile, with the samplers that can."""
  if name not in SAMPLERS:
    raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
  if process is None:
    return
  if name in DISCRETE and not isinstance(process, Schedule):
    raise ValueError(f"the {name!r} sampler runs DDPM's discrete chain, not "
                     f"{type(process).__name__}: choose one of "
                     f"{sorted(set(SAMPLERS) - set(DISCRETE))}")
  if name in SIGMA_SPACE:
    process.sigma_range()


def run_sampler(name: str, model_fn: Callable[[jax.Array, jax.Array], jax.Array],
                process: Process, rng: jax.Array, shape: Sequence[int], *,
                prediction: str = "eps", clip_denoised: bool = True,
                x_T: jax.Array | None = None, **options: Any) -> jax.Array:
  """Samples with the sampler `name`, passing it the `options` it reads (`OPTIONS`).

  Args:
    name: A key of `SAMPLERS`.
    model_fn: (x_t [B, ...], t [B]) -> a `prediction` at the process's time t.
    process: The noising process the model was trained on.
    rng: PRNG key.
    shape: Static output shape [B, ...].
    prediction: What `model_fn` predicts.
    clip_denoised: Clip x0 estimates to [-1, 1].
    x_T: Optional starting noise of shape `shape` (None: drawn from `rng`).
    **options: Sampling options by name (`steps`, `eta`, `spacing`, `dpm_spacing`, `rho`,
      `s_churn`, `s_tmin`, `s_tmax`, `s_noise`, `shift`); those the sampler does not read are
      ignored, those it reads and are absent take its defaults.

  Returns:
    The samples, shape `shape`.
  """
  check_sampler(name)
  kwargs = {k: options[v] for k, v in OPTIONS[name].items() if v in options}
  return SAMPLERS[name](model_fn, process, rng, shape, prediction=prediction,
                        clip_denoised=clip_denoised, x_T=x_T, **kwargs)


def sampler_tag(name: str, **options: Any) -> str:
  """The file-name tag of sampler `name` with `options` (and ``num_timesteps`` for 'ddpm')."""
  check_sampler(name)
  return TAGS[name].format(name=name, **options)
