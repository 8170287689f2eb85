"""Fast training-free ODE solvers for the probability-flow ODE of a DDPM schedule.

All three share `ddim_sample`'s calling convention
`(eps_fn, schedule, rng, shape, *, steps, ..., clip_denoised, x_T)`, are one
`jax.lax.scan` over their steps, and run un-jitted or inside a caller's
`jax.jit` (with `shape`, `steps` and the other flags static; the schedule may
be traced). They are deterministic: `rng` only draws x_T ~ N(0, I) from the
first key of `jax.random.split(rng)` (as `ddim_sample` does), so the same
`rng` or `x_T` starts every sampler from the same state at t = T - 1.

* `dpmpp_2m_sample`: DPM-Solver++(2M) (Lu et al. 2022b), data prediction,
  multistep, on the discrete schedule's lambda_t = log(alpha_t / sigma_t).
  eps_fn is called at integer timesteps (`dpm_timesteps`, diffusers'
  spacings) and the final step goes to sigma = 0, returning x0.
* `euler_sample`, `heun_sample`: the probability-flow ODE in the sigma
  parameterization of Karras et al. (2022, EDM): sigma_t =
  sqrt((1 - abar_t) / abar_t), x = x_t / sqrt(abar_t) = x_t sqrt(1 + sigma^2),
  dx / dsigma = (x - D(x; sigma)) / sigma = eps, on the Karras grid
  (`karras_sigmas`, rho = 7). Their sigmas are continuous, so eps_fn is
  called at float32 fractional timesteps t = `sigma_to_timestep(sigma)`
  (interpolation of t over log sigma_t, as k-diffusion and diffusers do) on
  the VP input x_t = x / sqrt(1 + sigma^2). A model that accepts only integer
  t can be wrapped with rounding, at a small loss of accuracy.

Models of the 'x0' or 'v' parameterization run through
`jgen.diffusion.parameterization.to_eps_fn`; classifier-free guidance wraps
an eps_fn into another eps_fn.
"""

from typing import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jgen.diffusion.parameterization import sigma_to_timestep
from jgen.diffusion.samplers import initial_noise, trailing_timesteps
from jgen.ops.schedules import Schedule

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]

DPM_SPACINGS = ("linspace", "leading", "trailing")


def dpm_timesteps(num_timesteps: int, steps: int, spacing: str = "linspace") -> np.ndarray:
  """The model timesteps of `dpmpp_2m_sample`, as diffusers' schedulers choose them.

  With T = num_timesteps and n = steps (diffusers' `timestep_spacing`, with
  `steps_offset` = 0):
    'linspace': round(linspace(0, T - 1, n + 1))[::-1][:-1]  (the default);
    'leading':  (arange(n + 1) * (T // (n + 1)))[::-1][:-1];
    'trailing': round(arange(T, 0, -T / n)) - 1.
  The last entry is about T / n ('trailing' T / n - 1); the solver then takes
  one final step from it to sigma = 0.

  Args:
    num_timesteps: Number of diffusion steps T.
    steps: Number of model evaluations n: in [1, T - 1] for 'linspace' and
      'leading', [1, T] for 'trailing'.
    spacing: 'linspace', 'leading' or 'trailing'.

  Returns:
    Strictly decreasing int array of shape [steps] with values in [0, T - 1].

  Raises:
    ValueError: If `steps` is out of range or `spacing` is unknown.
  """
  if spacing not in DPM_SPACINGS:
    raise ValueError(f"unknown spacing {spacing!r}; valid: {list(DPM_SPACINGS)}")
  max_steps = num_timesteps if spacing == "trailing" else num_timesteps - 1
  if not 1 <= steps <= max_steps:
    raise ValueError(f"steps must lie in [1, {max_steps}] for spacing {spacing!r}, got {steps}")
  if spacing == "linspace":
    ts = np.linspace(0, num_timesteps - 1, steps + 1).round()[::-1][:-1]
  elif spacing == "leading":
    ts = (np.arange(steps + 1) * (num_timesteps // (steps + 1)))[::-1][:-1]
  else:
    ts = trailing_timesteps(num_timesteps, steps)
  ts = ts.astype(np.int64)
  assert ts.shape == (steps,) and np.all(np.diff(ts) < 0), ts
  return ts


def dpmpp_2m_sample(
    eps_fn: EpsFn,
    schedule: Schedule,
    rng: jax.Array,
    shape: Sequence[int],
    *,
    steps: int = 20,
    spacing: str = "linspace",
    clip_denoised: bool = True,
    x_T: jax.Array | None = None,
) -> jax.Array:
  """DPM-Solver++(2M) on the discrete schedule (Lu et al. 2022b, Alg. 2).

  With alpha_i = sqrt(abar), sigma_i = sqrt(1 - abar), lambda_i =
  log(alpha_i / sigma_i) at t_i = `dpm_timesteps(T, steps, spacing)[i]`,
  data prediction D_i = x0_pred(x_i, t_i) and h_i = lambda_{i+1} - lambda_i:

    x_{i+1} = (sigma_{i+1} / sigma_i) x_i + alpha_{i+1} (1 - e^{-h_i}) D'_i,
    D'_i = (1 + 1 / (2 r_i)) D_i - 1 / (2 r_i) D_{i-1},  r_i = h_{i-1} / h_i,

  with D'_0 = D_0 (first step first-order). The final step goes from
  t_{steps-1} to sigma = 0 and is first-order, i.e. returns D_{steps-1}
  (diffusers' `final_sigmas_type='zero'`, `lower_order_final`). One model
  evaluation per step.

  Args:
    eps_fn: Noise predictor, (x_t [B, ...] float32, t [B] int32) -> eps.
    schedule: The diffusion schedule.
    rng: PRNG key (only draws x_T).
    shape: Static output shape [B, ...].
    steps: Static number of model evaluations.
    spacing: Static timestep spacing of `dpm_timesteps`.
    clip_denoised: Clip the x0 prediction to [-1, 1].
    x_T: Optional starting noise of shape `shape` (at step T - 1).

  Returns:
    The samples, shape `shape`.
  """
  ts = dpm_timesteps(schedule.num_timesteps, steps, spacing)
  x_T, _, shape = initial_noise(rng, shape, x_T)
  alpha = schedule.sqrt_alphas_cumprod[ts]
  sigma = schedule.sqrt_one_minus_alphas_cumprod[ts]
  lam = jnp.log(alpha) - jnp.log(sigma)
  # h_i for the steps that land on a model timestep; the final step has h = inf.
  h = lam[1:] - lam[:-1]
  one = jnp.ones((1,), jnp.float32)
  c_x = jnp.concatenate([sigma[1:] / sigma[:-1], 0.0 * one])
  c_d = jnp.concatenate([-alpha[1:] * jnp.expm1(-h), one])
  # Second-order weights for steps 1..steps-2; steps 0 and steps-1 are first-order.
  half_inv_r = 0.5 * h[1:] / h[:-1]
  w_prev = jnp.concatenate([0.0 * one, -half_inv_r, 0.0 * one])[:steps]
  xs = (jnp.asarray(ts, jnp.int32), c_x, c_d, w_prev)

  def step(carry, inputs):
    x, d_prev = carry
    t_i, cx, cd, wp = inputs
    t = jnp.full((shape[0],), t_i, dtype=jnp.int32)
    eps = eps_fn(x, t)
    chex.assert_equal_shape([eps, x])
    a_i = schedule.sqrt_alphas_cumprod[t_i]
    s_i = schedule.sqrt_one_minus_alphas_cumprod[t_i]
    d = (x - s_i * eps) / a_i
    if clip_denoised:
      d = jnp.clip(d, -1.0, 1.0)
    x = cx * x + cd * ((1.0 - wp) * d + wp * d_prev)
    return (x, d), None

  (x, _), _ = jax.lax.scan(step, (x_T, jnp.zeros_like(x_T)), xs)
  return x


def karras_level(i: jax.Array | int, n: jax.Array | int, *, sigma_min: float | jax.Array,
                 sigma_max: float | jax.Array, rho: float = 7.0) -> jax.Array:
  """sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
  the i-th of n Karras levels (Karras et al. 2022, Eq. 5), i and n may be traced; i / (n - 1)
  is clamped to [0, 1] (n = 1: sigma_max)."""
  ramp = jnp.clip(jnp.asarray(i, jnp.float32)
                  / jnp.maximum(jnp.asarray(n, jnp.float32) - 1.0, 1.0), 0.0, 1.0)
  lo = jnp.asarray(sigma_min, jnp.float32)**(1.0 / rho)
  hi = jnp.asarray(sigma_max, jnp.float32)**(1.0 / rho)
  return (hi + ramp * (lo - hi))**rho


def karras_sigmas(sigma_min: float | jax.Array, sigma_max: float | jax.Array, steps: int, *,
                  rho: float = 7.0) -> jax.Array:
  """The `steps` positive noise levels `karras_level(i, steps)`, i = 0..steps-1 (n = 1 gives
  [sigma_max]), with a final 0 appended.

  Args:
    sigma_min: Smallest positive noise level.
    sigma_max: Largest noise level.
    steps: Static number n of positive levels (>= 1).
    rho: Warping exponent; larger puts more steps at low noise.

  Returns:
    float32 array of shape [steps + 1], decreasing from sigma_max to 0.
  """
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  sigmas = karras_level(jnp.arange(steps), steps, sigma_min=sigma_min, sigma_max=sigma_max,
                        rho=rho)
  return jnp.concatenate([sigmas, jnp.zeros((1,), jnp.float32)])


def schedule_sigmas(schedule: Schedule, steps: int, *, rho: float = 7.0) -> jax.Array:
  """`karras_sigmas` between sigma_0 and sigma_{T-1} of the schedule, [steps + 1]."""
  table = schedule.sqrt_recipm1_alphas_cumprod
  return karras_sigmas(table[0], table[-1], steps, rho=rho)


def _denoiser(eps_fn: EpsFn, schedule: Schedule, batch: int,
              clip: bool) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Returns d(x, sigma) = (x - D(x; sigma)) / sigma, the ODE's dx/dsigma."""

  def deriv(x, sigma):
    t = jnp.broadcast_to(sigma_to_timestep(schedule, sigma), (batch,))
    eps = eps_fn(x * jax.lax.rsqrt(1.0 + jnp.square(sigma)), t)
    chex.assert_equal_shape([eps, x])
    if not clip:
      return eps
    denoised = jnp.clip(x - sigma * eps, -1.0, 1.0)
    return (x - denoised) / sigma

  return deriv


def _karras_init(schedule: Schedule, rng: jax.Array, shape: Sequence[int], x_T: jax.Array | None,
                 steps: int, rho: float) -> tuple[jax.Array, tuple[int, ...], jax.Array]:
  """Returns (x at sigma_max, static shape, the [steps + 1] sigma grid)."""
  x_T, _, shape = initial_noise(rng, shape, x_T)
  sigmas = schedule_sigmas(schedule, steps, rho=rho)
  # x = x_t / sqrt(abar) at t = T - 1: the same state as x_T for ddim_sample.
  x = x_T * jnp.sqrt(1.0 + jnp.square(sigmas[0]))
  return x, shape, sigmas


def euler_sample(
    eps_fn: EpsFn,
    schedule: Schedule,
    rng: jax.Array,
    shape: Sequence[int],
    *,
    steps: int = 50,
    rho: float = 7.0,
    clip_denoised: bool = True,
    x_T: jax.Array | None = None,
) -> jax.Array:
  """Euler's method on the probability-flow ODE over `schedule_sigmas` (Karras et al. 2022).

  x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d(x_i, sigma_i), d = (x - D) / sigma,
  from x_0 = x_T sqrt(1 + sigma_max^2) down to sigma = 0. One model evaluation
  per step, at float32 timesteps `sigma_to_timestep(sigma_i)`.

  Args:
    eps_fn: Noise predictor, (x_t [B, ...] float32, t [B] float32) -> eps.
    schedule: The diffusion schedule.
    rng: PRNG key (only draws x_T).
    shape: Static output shape [B, ...].
    steps: Static number of steps (model evaluations).
    rho: Static Karras grid exponent.
    clip_denoised: Clip the x0 prediction D to [-1, 1].
    x_T: Optional starting noise of shape `shape` (at step T - 1).

  Returns:
    The samples, shape `shape`.
  """
  x, shape, sigmas = _karras_init(schedule, rng, shape, x_T, steps, rho)
  deriv = _denoiser(eps_fn, schedule, shape[0], clip_denoised)

  def step(x, inputs):
    s, s_next = inputs
    return x + (s_next - s) * deriv(x, s), None

  x, _ = jax.lax.scan(step, x, (sigmas[:-1], sigmas[1:]))
  return x


def heun_sample(
    eps_fn: EpsFn,
    schedule: Schedule,
    rng: jax.Array,
    shape: Sequence[int],
    *,
    steps: int = 20,
    rho: float = 7.0,
    clip_denoised: bool = True,
    x_T: jax.Array | None = None,
) -> jax.Array:
  """Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Alg. 1).

  An Euler step to x' at sigma_{i+1}, then x_{i+1} = x_i + (sigma_{i+1} -
  sigma_i) (d(x_i, sigma_i) + d(x', sigma_{i+1})) / 2, except on the last
  step to sigma = 0, which stays Euler. 2 * steps - 1 model evaluations; the
  correction is a `lax.cond` inside the one scan.

  Args:
    eps_fn: Noise predictor, (x_t [B, ...] float32, t [B] float32) -> eps.
    schedule: The diffusion schedule.
    rng: PRNG key (only draws x_T).
    shape: Static output shape [B, ...].
    steps: Static number of steps (sigma intervals).
    rho: Static Karras grid exponent.
    clip_denoised: Clip the x0 prediction D to [-1, 1].
    x_T: Optional starting noise of shape `shape` (at step T - 1).

  Returns:
    The samples, shape `shape`.
  """
  x, shape, sigmas = _karras_init(schedule, rng, shape, x_T, steps, rho)
  deriv = _denoiser(eps_fn, schedule, shape[0], clip_denoised)
  is_last = jnp.arange(steps) == steps - 1

  def step(x, inputs):
    s, s_next, last = inputs
    dt = s_next - s
    d = deriv(x, s)
    x_euler = x + dt * d

    def correct(_):
      # s_next > 0 on this branch; the max keeps the untaken branch finite.
      d_next = deriv(x_euler, jnp.maximum(s_next, sigmas[-2]))
      return x + dt * 0.5 * (d + d_next)

    return jax.lax.cond(last, lambda _: x_euler, correct, None), None

  x, _ = jax.lax.scan(step, x, (sigmas[:-1], sigmas[1:], is_last))
  return x
