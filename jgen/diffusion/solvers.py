"""Fast solvers for the probability-flow ODE, and EDM's stochastic sampler.

All share `ddim_sample`'s calling convention
`(model_fn, process, rng, shape, *, prediction, steps, ..., clip_denoised, x_T)`, are one
`jax.lax.scan` over their steps, and run un-jitted or inside a caller's
`jax.jit` (with `shape`, `steps` and the other flags static; the schedule may
be traced). `rng` draws x_T ~ N(0, prior_std^2 I) from the first key of
`jax.random.split(rng)` (as `ddim_sample` does), so the same `rng` or `x_T` starts every
sampler from the same state at the prior's time; only `edm_sample` with churn draws more.

* `dpmpp_2m_sample`: DPM-Solver++(2M) (Lu et al. 2022b), data prediction,
  multistep, on the discrete schedule's lambda_t = log(alpha_t / sigma_t).
  eps_fn is called at integer timesteps (`dpm_timesteps`, diffusers'
  spacings) and the final step goes to sigma = 0, returning x0.
* `euler_sample`, `heun_sample`: the probability-flow ODE in the sigma
  parameterization of Karras et al. (2022, EDM) of any process with a finite noise range
  (`jgen.ops.processes`): sigma(t) = s(t) / a(t), x = x_t / a(t), dx / dsigma = (x - D(x;
  sigma)) / sigma = eps, on the Karras grid (`karras_sigmas`, rho = 7) between the process's
  sigma(t_min) and sigma(t_max). The model is called at time t = `process.time_of_sigma(sigma)`
  on x_t = a x; for DDPM's chain those are float32 fractional timesteps (interpolation of t
  over log sigma_t, as k-diffusion and diffusers do) and a = 1 / sqrt(1 + sigma^2). A model
  that accepts only integer t can be wrapped with rounding, at a small loss of accuracy.
* `edm_sample`: Karras et al. (2022), Algorithm 2: `heun_sample` with "churn" (noise added to
  raise sigma_i to sigma_i (1 + gamma_i) before each step; S_churn = 0 is Algorithm 1).

`model_fn` predicts `prediction` ('eps', 'x0', 'v' or 'velocity'; converted to eps by
`jgen.diffusion.parameterization.to_eps_fn`); classifier-free guidance wraps one model function
into another.
"""

from typing import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jgen.diffusion.parameterization import to_eps_fn
from jgen.diffusion.samplers import discrete_chain, initial_noise, trailing_timesteps
from jgen.ops.processes import Process

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
    model_fn: EpsFn,
    schedule: Process,
    rng: jax.Array,
    shape: Sequence[int],
    *,
    prediction: str = "eps",
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
    model_fn: Denoiser, (x_t [B, ...] float32, t [B] int32) -> a `prediction`.
    schedule: DDPM's discrete chain (a `Schedule`).
    rng: PRNG key (only draws x_T).
    shape: Static output shape [B, ...].
    prediction: What `model_fn` predicts.
    steps: Static number of model evaluations.
    spacing: Static timestep spacing of `dpm_timesteps`.
    clip_denoised: Clip the x0 prediction to [-1, 1].
    x_T: Optional starting noise of shape `shape` (at step T - 1).

  Returns:
    The samples, shape `shape`.
  """
  schedule = discrete_chain(schedule, "dpmpp_2m")
  eps_fn = to_eps_fn(model_fn, schedule, prediction)
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


def schedule_sigmas(process: Process, steps: int, *, rho: float = 7.0) -> jax.Array:
  """`karras_sigmas` between the process's sigma(t_min) and sigma(t_max), [steps + 1]."""
  lo, hi = process.sigma_range()
  return karras_sigmas(lo, hi, steps, rho=rho)


def _scales(process: Process, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(a, 1 / a) at noise level sigma: 1 / sqrt(1 + sigma^2) and sqrt(1 + sigma^2) for a VP
  process, a(time_of_sigma(sigma)) otherwise."""
  if process.variance_preserving:
    return jax.lax.rsqrt(1.0 + jnp.square(sigma)), jnp.sqrt(1.0 + jnp.square(sigma))
  a, _ = process.marginal(process.time_of_sigma(sigma))
  return a, 1.0 / a


def _denoiser(eps_fn: EpsFn, process: Process, batch: int,
              clip: bool) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Returns d(x, sigma) = (x - D(x; sigma)) / sigma, the ODE's dx/dsigma."""

  def deriv(x, sigma):
    t = jnp.broadcast_to(process.time_of_sigma(sigma), (batch,))
    eps = eps_fn(x * _scales(process, sigma)[0], t)
    chex.assert_equal_shape([eps, x])
    if not clip:
      return eps
    denoised = jnp.clip(x - sigma * eps, -1.0, 1.0)
    return (x - denoised) / sigma

  return deriv


def _karras_init(process: Process, rng: jax.Array, shape: Sequence[int],
                 x_T: jax.Array | None, steps: int, rho: float
                 ) -> tuple[jax.Array, tuple[int, ...], jax.Array]:
  """Returns (x at sigma_max, static shape, the [steps + 1] sigma grid)."""
  x_T, _, shape = initial_noise(rng, shape, x_T, process.prior_std)
  sigmas = schedule_sigmas(process, steps, rho=rho)
  # x = x_t / a at the prior's time: the same state as x_T for ddim_sample.
  x = x_T * _scales(process, sigmas[0])[1]
  return x, shape, sigmas


def euler_sample(
    model_fn: EpsFn,
    process: Process,
    rng: jax.Array,
    shape: Sequence[int],
    *,
    prediction: str = "eps",
    steps: int = 50,
    rho: float = 7.0,
    clip_denoised: bool = True,
    x_T: jax.Array | None = None,
) -> jax.Array:
  """Euler's method on the probability-flow ODE over `schedule_sigmas` (Karras et al. 2022).

  x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d(x_i, sigma_i), d = (x - D) / sigma,
  from x_0 = x_T / a(t_max) down to sigma = 0. One model evaluation
  per step, at times `process.time_of_sigma(sigma_i)`.

  Args:
    model_fn: Denoiser, (x_t [B, ...] float32, t [B] float32) -> a `prediction`.
    process: The noising process (`jgen.ops.processes`) with a finite sigma(t_max).
    rng: PRNG key (only draws x_T).
    shape: Static output shape [B, ...].
    prediction: What `model_fn` predicts.
    steps: Static number of steps (model evaluations).
    rho: Static Karras grid exponent.
    clip_denoised: Clip the x0 prediction D to [-1, 1].
    x_T: Optional starting noise of shape `shape` (at the prior's time).

  Returns:
    The samples, shape `shape`.
  """
  return edm_sample(model_fn, process, rng, shape, prediction=prediction, steps=steps, rho=rho,
                    second_order=False, clip_denoised=clip_denoised, x_T=x_T)


def heun_sample(
    model_fn: EpsFn,
    process: Process,
    rng: jax.Array,
    shape: Sequence[int],
    *,
    prediction: str = "eps",
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
    model_fn: Denoiser, (x_t [B, ...] float32, t [B] float32) -> a `prediction`.
    process: The noising process (`jgen.ops.processes`) with a finite sigma(t_max).
    rng: PRNG key (only draws x_T).
    shape: Static output shape [B, ...].
    prediction: What `model_fn` predicts.
    steps: Static number of steps (sigma intervals).
    rho: Static Karras grid exponent.
    clip_denoised: Clip the x0 prediction D to [-1, 1].
    x_T: Optional starting noise of shape `shape` (at the prior's time).

  Returns:
    The samples, shape `shape`.
  """
  return edm_sample(model_fn, process, rng, shape, prediction=prediction, steps=steps, rho=rho,
                    clip_denoised=clip_denoised, x_T=x_T)


def edm_sample(
    model_fn: EpsFn,
    process: Process,
    rng: jax.Array,
    shape: Sequence[int],
    *,
    prediction: str = "eps",
    steps: int = 18,
    rho: float = 7.0,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    second_order: bool = True,
    clip_denoised: bool = True,
    x_T: jax.Array | None = None,
) -> jax.Array:
  """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2) on `schedule_sigmas`.

  At each sigma_i in [s_tmin, s_tmax], gamma_i = min(s_churn / steps, sqrt(2) - 1) (else 0);
  sigma_hat = sigma_i (1 + gamma_i) and x_hat = x_i + sqrt(sigma_hat^2 - sigma_i^2) s_noise z,
  z ~ N(0, I) from `fold_in(step_rng, i)` (drawn only when gamma_i > 0); then an Euler step
  from sigma_hat to sigma_{i+1} with d = (x_hat - D(x_hat; sigma_hat)) / sigma_hat and, if
  `second_order` and sigma_{i+1} > 0, Heun's correction with d' at sigma_{i+1}.
  s_churn = 0 is Algorithm 1 (`heun_sample`); `second_order=False` is `euler_sample` (and,
  with churn, k-diffusion's `sample_euler` / diffusers' `EDMEulerScheduler`). EDM's CIFAR-10
  settings: steps = 18, rho = 7, s_churn = 0; ImageNet-64: s_churn = 40, s_tmin = 0.05,
  s_tmax = 50, s_noise = 1.003 with 256 steps (Table 5).

  Args:
    model_fn: Denoiser, (x_t [B, ...] float32, t [B] float32) -> a `prediction`.
    process: The noising process (`jgen.ops.processes`) with a finite sigma(t_max).
    rng: PRNG key: x_T from its first split, the churn noise from the second.
    shape: Static output shape [B, ...].
    prediction: What `model_fn` predicts.
    steps: Static number of steps N (sigma intervals).
    rho: Static Karras grid exponent.
    s_churn, s_tmin, s_tmax, s_noise: Algorithm 2's stochasticity (static floats).
    second_order: Heun's correction on every step but the last.
    clip_denoised: Clip the x0 prediction D to [-1, 1].
    x_T: Optional starting noise of shape `shape` (at the prior's time).

  Returns:
    The samples, shape `shape`.
  """
  eps_fn = to_eps_fn(model_fn, process, prediction)
  x, shape, sigmas = _karras_init(process, rng, shape, x_T, steps, rho)
  _, step_rng = jax.random.split(rng)
  deriv = _denoiser(eps_fn, process, shape[0], clip_denoised)
  is_last = jnp.arange(steps) == steps - 1
  gamma_max = min(s_churn / steps, 2**0.5 - 1)
  churn = s_churn > 0

  def step(x, inputs):
    i, s, s_next, last = inputs
    if churn:
      gamma = jnp.where((s >= s_tmin) & (s <= s_tmax), gamma_max, 0.0)
      s_hat = s * (1.0 + gamma)
      z = jax.random.normal(jax.random.fold_in(step_rng, i), shape, x.dtype)
      # sqrt(s_hat^2 - s^2) as s sqrt(gamma (2 + gamma)): the difference of squares, contracted
      # into an FMA by XLA, came out slightly negative (a NaN) at the levels with gamma = 0.
      x = x + s * jnp.sqrt(gamma * (2.0 + gamma)) * s_noise * z
      s = s_hat
    dt = s_next - s
    d = deriv(x, s)
    x_euler = x + dt * d
    if not second_order:
      return x_euler, None

    def correct(_):
      # s_next > 0 on this branch; the max keeps the untaken branch finite.
      d_next = deriv(x_euler, jnp.maximum(s_next, sigmas[-2]))
      return x + dt * 0.5 * (d + d_next)

    return jax.lax.cond(last, lambda _: x_euler, correct, None), None

  x, _ = jax.lax.scan(step, x, (jnp.arange(steps), sigmas[:-1], sigmas[1:], is_last))
  return x
