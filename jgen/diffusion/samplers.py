"""Ancestral (DDPM) and implicit (DDIM) samplers of DDPM's discrete chain.

Like every sampler of `jgen.diffusion` they take `(model_fn, process, rng, shape, *,
prediction, ...)`; the process must be the chain itself (a `Schedule`), and `model_fn` predicts
`prediction` ('eps', 'x0', 'v'; converted to eps with `parameterization.to_eps_fn`).

Each sampler is one `jax.lax.scan` over its steps. `rng` is split as
`init_rng, step_rng = jax.random.split(rng)`: x_T ~ N(0, I) is drawn from
`init_rng` (unless given) and the noise of scan step i from
`jax.random.fold_in(step_rng, i)`. The samplers run un-jitted or inside a
caller's `jax.jit` with `shape`, `steps` and `spacing` static.
"""

from typing import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jgen.diffusion.parameterization import to_eps_fn
from jgen.ops.processes import Process
from jgen.ops.schedules import (
    Schedule,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_posterior_mean_variance,
)

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]

SPACINGS = ("uniform", "quadratic", "trailing")


def discrete_chain(process: Process, sampler: str) -> Schedule:
  """`process` if it is DDPM's discrete chain, else a ValueError naming the samplers of
  continuous processes."""
  if not isinstance(process, Schedule):
    raise ValueError(f"the {sampler!r} sampler runs DDPM's discrete chain (a Schedule), not "
                     f"{type(process).__name__}: sample continuous processes with euler, heun, "
                     "edm, ode_euler, ode_heun, ode_midpoint or sde_euler")
  return process


def initial_noise(rng: jax.Array, shape: Sequence[int], x_T: jax.Array | None,
                  prior_std: float = 1.0) -> tuple[jax.Array, jax.Array, tuple[int, ...]]:
  """`(x_T, step_rng, shape)`: x_T ~ N(0, prior_std^2 I) from the first half of `split(rng)`
  unless given, the per-step key from the second (every sampler and solver starts this way)."""
  shape = tuple(int(d) for d in shape)
  if len(shape) < 2:
    raise ValueError(f"shape must be [B, ...] with rank >= 2, got {shape}")
  init_rng, step_rng = jax.random.split(rng)
  if x_T is None:
    x_T = jax.random.normal(init_rng, shape, jnp.float32)
    if prior_std != 1.0:
      x_T = prior_std * x_T
  else:
    chex.assert_shape(x_T, shape)
    x_T = jnp.asarray(x_T, jnp.float32)
  return x_T, step_rng, shape


def _predict(eps_fn: EpsFn, schedule: Schedule, x: jax.Array, t: jax.Array,
             clip: bool) -> tuple[jax.Array, jax.Array]:
  """Returns (x0_pred, eps) with eps made consistent with a clipped x0_pred."""
  eps = eps_fn(x, t)
  chex.assert_equal_shape([eps, x])
  x0 = predict_x0_from_eps(schedule, x, t, eps)
  if clip:
    x0 = jnp.clip(x0, -1.0, 1.0)
    eps = predict_eps_from_x0(schedule, x, t, x0)
  return x0, eps


def ddpm_sample(
    model_fn: EpsFn,
    schedule: Schedule,
    rng: jax.Array,
    shape: Sequence[int],
    *,
    prediction: str = "eps",
    clip_denoised: bool = True,
    x_T: jax.Array | None = None,
    return_trajectory: bool = False,
    mean_shift: Callable[[jax.Array, jax.Array, jax.Array], jax.Array] | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Ancestral sampling over all T steps (Ho et al. 2020).

  Each step predicts x_0 from eps (clipped to [-1, 1] if `clip_denoised`),
  takes the posterior mean of q(x_{t-1} | x_t, x_0) and adds noise with the
  fixed 'small' variance (posterior_log_variance_clipped); no noise at t = 0.

  Args:
    model_fn: Denoiser, (x_t [B, ...] float32, t [B] int32) -> a `prediction`.
    schedule: The diffusion schedule.
    rng: PRNG key.
    shape: Static output shape [B, ...].
    prediction: What `model_fn` predicts ('eps', 'x0' or 'v').
    clip_denoised: Clip the x_0 prediction to [-1, 1].
    x_T: Optional starting noise of shape `shape` (at step T - 1).
    return_trajectory: Also return the states visited.
    mean_shift: `(x_t, t, posterior variance) -> delta` added to each step's posterior mean
      (classifier guidance: `s * variance * grad log p(y | x_t)`); None adds nothing.

  Returns:
    The samples, shape `shape`; with `return_trajectory`, a tuple
    (samples, trajectory) where trajectory has shape `[T + 1, *shape]`,
    trajectory[k] is the state at noise level alphas_cumprod[T - 1 - k]
    (trajectory[0] = x_T) and trajectory[T] equals the samples.
  """
  schedule = discrete_chain(schedule, "ddpm")
  eps_fn = to_eps_fn(model_fn, schedule, prediction)
  x_T, step_rng, shape = initial_noise(rng, shape, x_T)
  num_timesteps = schedule.num_timesteps

  def step(x, i):
    t = jnp.full((shape[0],), num_timesteps - 1 - i, dtype=jnp.int32)
    x0, _ = _predict(eps_fn, schedule, x, t, clip_denoised)
    mean, variance, log_var = q_posterior_mean_variance(schedule, x0, x, t)
    if mean_shift is not None:
      mean = mean + mean_shift(x, t, variance).astype(x.dtype)
    noise = jax.random.normal(jax.random.fold_in(step_rng, i), shape, x.dtype)
    nonzero = jnp.where(i < num_timesteps - 1, 1.0, 0.0).astype(x.dtype)
    x = mean + nonzero * jnp.exp(0.5 * log_var) * noise
    return x, (x if return_trajectory else None)

  x, states = jax.lax.scan(step, x_T, jnp.arange(num_timesteps, dtype=jnp.int32))
  if return_trajectory:
    return x, jnp.concatenate([x_T[None], states], axis=0)
  return x


def trailing_timesteps(num_timesteps: int, steps: int) -> np.ndarray:
  """round(arange(T, 0, -T / steps)) - 1: `steps` decreasing timesteps from T - 1 (diffusers'
  'trailing' timestep spacing), int64."""
  ts = (np.arange(num_timesteps, 0, -num_timesteps / steps).round() - 1).astype(np.int64)
  return ts[:steps]


def ddim_timesteps(num_timesteps: int, steps: int, spacing: str = "uniform") -> np.ndarray:
  """The sub-sequence of timesteps visited by DDIM (Song et al. 2021, App. D.2).

  tau_i = floor(c * i) ('uniform') or floor(c * i^2) ('quadratic') for
  i = 0..steps-1, with c chosen so that tau_0 = 0 and tau_{steps-1} = T - 1
  (steps = 1 gives [T - 1]). Collisions of the quadratic rule at small i are
  resolved by pushing later entries up to keep the sequence strictly
  increasing; this never exceeds T - 1. 'trailing' (Lin et al. 2024, Table 2;
  `trailing_timesteps`) is round(T - i T / steps) - 1 reversed: it ends at
  T - 1 and starts at T / steps - 1 instead of 0, so a few-step chain never
  spends a step at t = 0 (the grid of distilled students and LCM).

  Args:
    num_timesteps: Number of diffusion steps T.
    steps: Number of sampling steps, in [1, T].
    spacing: 'uniform', 'quadratic' or 'trailing'.

  Returns:
    Strictly increasing int array of shape [steps] with values in [0, T-1].

  Raises:
    ValueError: If `steps` is out of range or `spacing` is unknown.
  """
  if spacing not in SPACINGS:
    raise ValueError(f"unknown spacing {spacing!r}; valid: {list(SPACINGS)}")
  if not 1 <= steps <= num_timesteps:
    raise ValueError(f"steps must lie in [1, {num_timesteps}], got {steps}")
  if spacing == "trailing":
    return trailing_timesteps(num_timesteps, steps)[::-1].copy()
  if steps == 1:
    return np.array([num_timesteps - 1], dtype=np.int64)
  i = np.arange(steps, dtype=np.int64)
  power = 1 if spacing == "uniform" else 2
  taus = (i**power * (num_timesteps - 1)) // (steps - 1)**power
  return np.maximum.accumulate(taus - i) + i


def ddim_sample(
    model_fn: EpsFn,
    schedule: Schedule,
    rng: jax.Array,
    shape: Sequence[int],
    *,
    prediction: str = "eps",
    steps: int = 50,
    eta: float = 0.0,
    spacing: str = "uniform",
    clip_denoised: bool = True,
    x_T: jax.Array | None = None,
) -> jax.Array:
  """DDIM sampling (Song et al. 2021, Eq. 12) on `ddim_timesteps`.

  x_prev = sqrt(abar_prev) x0_pred + sqrt(1 - abar_prev - sigma^2) eps
  + sigma z, with sigma = eta sqrt((1 - abar_prev) / (1 - abar))
  sqrt(1 - abar / abar_prev) and abar_prev = 1 after the last step. eta = 0
  is deterministic given x_T (no noise is drawn when eta is the Python
  number 0); eta = 1 matches DDPM's posterior variance.

  Args:
    model_fn: Denoiser, (x_t [B, ...] float32, t [B] int32) -> a `prediction`.
    schedule: The diffusion schedule.
    rng: PRNG key.
    shape: Static output shape [B, ...].
    prediction: What `model_fn` predicts ('eps', 'x0' or 'v').
    steps: Static number of sampling steps, in [1, T].
    eta: Stochasticity (0 = DDIM, 1 = DDPM-like).
    spacing: Static timestep spacing, 'uniform' or 'quadratic'.
    clip_denoised: Clip the x_0 prediction to [-1, 1].
    x_T: Optional starting noise of shape `shape`.

  Returns:
    The samples, shape `shape`.
  """
  schedule = discrete_chain(schedule, "ddim")
  eps_fn = to_eps_fn(model_fn, schedule, prediction)
  taus = ddim_timesteps(schedule.num_timesteps, steps, spacing)
  deterministic = isinstance(eta, (int, float)) and eta == 0
  x_T, step_rng, shape = initial_noise(rng, shape, x_T)
  abar = schedule.alphas_cumprod[taus[::-1]]
  abar_prev = jnp.concatenate(
      [schedule.alphas_cumprod[taus[::-1][1:]],
       jnp.ones((1,), jnp.float32)])
  sigma = (eta * jnp.sqrt((1.0 - abar_prev) / (1.0 - abar)) * jnp.sqrt(1.0 - abar / abar_prev))
  xs = (
      jnp.arange(steps, dtype=jnp.int32),
      jnp.asarray(taus[::-1], dtype=jnp.int32),
      abar_prev,
      sigma,
  )

  def step(x, inputs):
    i, tau, a_prev, sig = inputs
    t = jnp.full((shape[0],), tau, dtype=jnp.int32)
    x0, eps = _predict(eps_fn, schedule, x, t, clip_denoised)
    dir_coef = jnp.sqrt(jnp.maximum(1.0 - a_prev - sig**2, 0.0))
    x = jnp.sqrt(a_prev) * x0 + dir_coef * eps
    if not deterministic:
      x = x + sig * jax.random.normal(jax.random.fold_in(step_rng, i), shape, x.dtype)
    return x, None

  x, _ = jax.lax.scan(step, x_T, xs)
  return x


def slerp(z0: jax.Array, z1: jax.Array, alpha: jax.Array | float) -> jax.Array:
  """Spherical linear interpolation, per example over the flattened features.

  Falls back to linear interpolation where z0 and z1 are (nearly) parallel.

  Args:
    z0: Start points, shape [B, ...].
    z1: End points, same shape as `z0`.
    alpha: Interpolation weight in [0, 1], a scalar or shape [B].

  Returns:
    Interpolated points, same shape as `z0`; alpha = 0 gives z0, 1 gives z1.
  """
  chex.assert_equal_shape([z0, z1])
  batch = z0.shape[0]
  a = jnp.broadcast_to(jnp.asarray(alpha, z0.dtype), (batch,))[:, None]
  u, v = z0.reshape(batch, -1), z1.reshape(batch, -1)
  norms = jnp.linalg.norm(u, axis=1) * jnp.linalg.norm(v, axis=1)
  cos = jnp.sum(u * v, axis=1) / jnp.maximum(norms, 1e-12)
  theta = jnp.arccos(jnp.clip(cos, -1.0, 1.0))[:, None]
  sin_theta = jnp.sin(theta)
  near_parallel = sin_theta < 1e-4
  safe_sin = jnp.where(near_parallel, 1.0, sin_theta)
  w0 = jnp.where(near_parallel, 1.0 - a, jnp.sin((1.0 - a) * theta) / safe_sin)
  w1 = jnp.where(near_parallel, a, jnp.sin(a * theta) / safe_sin)
  return (w0 * u + w1 * v).reshape(z0.shape)


def ddim_interpolate(
    eps_fn: EpsFn,
    schedule: Schedule,
    rng: jax.Array,
    *,
    shape: Sequence[int],
    num: int,
    steps: int = 50,
    spacing: str = "uniform",
    clip_denoised: bool = True,
) -> jax.Array:
  """Decodes a slerp path between two latents with deterministic DDIM (eta = 0).

  Two x_T ~ N(0, I) are drawn from the first two keys of
  `jax.random.split(rng, 3)`, interpolated at
  alpha = linspace(0, 1, num) with `slerp`, and decoded (Song et al. 2021, 5.3).

  Args:
    eps_fn: Noise predictor, (x_t [B, ...] float32, t [B] int32) -> eps.
    schedule: The diffusion schedule.
    rng: PRNG key.
    shape: Static shape of one example, e.g. [H, W, C].
    num: Static number of interpolation points (>= 1).
    steps: Static number of DDIM steps.
    spacing: Static DDIM timestep spacing.
    clip_denoised: Clip the x_0 prediction to [-1, 1].

  Returns:
    Decoded images of shape `[num, *shape]`.
  """
  if num < 1:
    raise ValueError(f"num must be >= 1, got {num}")
  shape = tuple(int(d) for d in shape)
  rng0, rng1, sample_rng = jax.random.split(rng, 3)
  z0 = jnp.broadcast_to(jax.random.normal(rng0, shape, jnp.float32), (num,) + shape)
  z1 = jnp.broadcast_to(jax.random.normal(rng1, shape, jnp.float32), (num,) + shape)
  x_T = slerp(z0, z1, jnp.linspace(0.0, 1.0, num, dtype=jnp.float32))
  return ddim_sample(
      eps_fn,
      schedule,
      sample_rng,
      (num,) + shape,
      steps=steps,
      eta=0.0,
      spacing=spacing,
      clip_denoised=clip_denoised,
      x_T=x_T,
  )
