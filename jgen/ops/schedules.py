"""The Gaussian forward (noising) process of DDPM and its closed-form posterior.

The process is q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) with
abar_t = prod_{s <= t} (1 - beta_s), timesteps indexed 0..T-1 (Ho et al. 2020).
Tables are computed in float64 NumPy and stored as float32 JAX arrays in a
`Schedule` pytree, so a schedule can be passed straight into `jax.jit`.
"""

from typing import Any, Callable

import chex
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

from jgen.ops.processes import Process


def linear_beta_schedule(num_timesteps: int,
                         *,
                         beta_start: float = 1e-4,
                         beta_end: float = 0.02) -> np.ndarray:
  """Linearly spaced betas (Ho et al. 2020).

  Args:
    num_timesteps: Number of diffusion steps T.
    beta_start: beta at t = 0.
    beta_end: beta at t = T - 1.

  Returns:
    float64 array of shape [T].
  """
  _check_num_timesteps(num_timesteps)
  if not 0.0 < beta_start <= beta_end < 1.0:
    raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
  return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def scaled_linear_beta_schedule(num_timesteps: int,
                                *,
                                beta_start: float = 0.00085,
                                beta_end: float = 0.012) -> np.ndarray:
  """Betas whose square roots are linearly spaced: Stable Diffusion's and latent diffusion's
  schedule (diffusers' ``"scaled_linear"``), beta_t = (sqrt(b_0) + t/(T-1) (sqrt(b_1) -
  sqrt(b_0)))^2.

  Args:
    num_timesteps: Number of diffusion steps T.
    beta_start: beta at t = 0.
    beta_end: beta at t = T - 1.

  Returns:
    float64 array of shape [T].
  """
  return linear_beta_schedule(num_timesteps, beta_start=beta_start**0.5,
                              beta_end=beta_end**0.5)**2


def cosine_beta_schedule(num_timesteps: int,
                         *,
                         s: float = 0.008,
                         max_beta: float = 0.999) -> np.ndarray:
  """Cosine schedule of Nichol & Dhariwal (2021).

  abar(t) = f(t) / f(0) with f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2),
  and beta_t = min(1 - abar(t + 1) / abar(t), max_beta).

  Args:
    num_timesteps: Number of diffusion steps T.
    s: Small offset that keeps beta_0 from being vanishingly small.
    max_beta: Upper clip on beta, avoiding a singularity at t = T.

  Returns:
    float64 array of shape [T].
  """
  _check_num_timesteps(num_timesteps)
  if not 0.0 < max_beta <= 1.0:
    raise ValueError(f"max_beta must lie in (0, 1], got {max_beta}")
  steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
  f = np.cos((steps + s) / (1.0 + s) * np.pi / 2.0)**2
  alphas_cumprod = f / f[0]
  betas = 1.0 - alphas_cumprod[1:] / alphas_cumprod[:-1]
  return np.clip(betas, 0.0, max_beta)


def _check_num_timesteps(num_timesteps: int) -> None:
  if int(num_timesteps) != num_timesteps or num_timesteps < 1:
    raise ValueError(f"num_timesteps must be a positive int, got {num_timesteps}")


_BETA_SCHEDULES: dict[str, Callable[..., np.ndarray]] = {
    "linear": linear_beta_schedule,
    "scaled_linear": scaled_linear_beta_schedule,
    "cosine": cosine_beta_schedule,
}


@struct.dataclass
class Schedule(Process):
  """Precomputed float32 tables of a diffusion process, each of shape [T]: DDPM's discrete VP
  chain as a `jgen.ops.processes.Process` (a = sqrt(abar_t), s = sqrt(1 - abar_t)).

  Time is the timestep t in [0, T - 1]. Integer t gathers the tables. Floating t (the
  fractional timesteps of the Karras solvers) interpolates log sigma(t) = log sqrt((1 -
  abar_t) / abar_t) linearly between neighbouring integer steps (as k-diffusion's
  discrete-schedule wrappers do; `sigma`, inverse `time_of_sigma`), then a = 1 / sqrt(1 +
  sigma^2) and s = sigma a; at integer values both paths agree.

  Attributes:
    betas: beta_t.
    alphas_cumprod: abar_t.
    alphas_cumprod_prev: abar_{t-1}, with abar_{-1} = 1.
    sqrt_alphas_cumprod: sqrt(abar_t).
    sqrt_one_minus_alphas_cumprod: sqrt(1 - abar_t).
    sqrt_recip_alphas_cumprod: 1 / sqrt(abar_t).
    sqrt_recipm1_alphas_cumprod: sqrt(1 / abar_t - 1).
    posterior_variance: beta_t (1 - abar_{t-1}) / (1 - abar_t).
    posterior_log_variance_clipped: log of the posterior variance, with the
      t = 0 entry (a zero variance) replaced by the t = 1 entry.
    posterior_mean_coef1: coefficient of x_0 in the posterior mean.
    posterior_mean_coef2: coefficient of x_t in the posterior mean.
  """

  betas: jnp.ndarray
  alphas_cumprod: jnp.ndarray
  alphas_cumprod_prev: jnp.ndarray
  sqrt_alphas_cumprod: jnp.ndarray
  sqrt_one_minus_alphas_cumprod: jnp.ndarray
  sqrt_recip_alphas_cumprod: jnp.ndarray
  sqrt_recipm1_alphas_cumprod: jnp.ndarray
  posterior_variance: jnp.ndarray
  posterior_log_variance_clipped: jnp.ndarray
  posterior_mean_coef1: jnp.ndarray
  posterior_mean_coef2: jnp.ndarray

  @property
  def num_timesteps(self) -> int:
    """Number of diffusion steps T (static, read from the array shape)."""
    return self.betas.shape[0]

  variance_preserving = True
  t_min = property(lambda self: 0.0)
  t_max = property(lambda self: float(self.num_timesteps - 1))
  prior_std = property(lambda self: 1.0)

  def _log_sigmas(self) -> jax.Array:
    # sqrt(1 / abar - 1) is computed in float64 by make_schedule: precise at t = 0.
    return jnp.log(self.sqrt_recipm1_alphas_cumprod)

  def sigma(self, t: jax.Array) -> jax.Array:
    """sigma(t) = sqrt((1 - abar_t) / abar_t) of float32 (or integer) t of any shape, log sigma
    interpolated linearly between integer steps; t is clamped to [0, T - 1]."""
    t = jnp.asarray(t, jnp.float32)
    grid = jnp.arange(self.num_timesteps, dtype=jnp.float32)
    return jnp.exp(jnp.interp(t, grid, self._log_sigmas()))

  def time_of_sigma(self, sigma: jax.Array) -> jax.Array:
    """The fractional timestep of noise level sigma: t interpolated linearly over the table of
    log sigma_t (k-diffusion's `sigma_to_t`, diffusers' `_sigma_to_t`); sigmas outside
    [sigma_0, sigma_{T-1}] clamp to 0 or T - 1."""
    log_sigma = jnp.log(jnp.asarray(sigma, jnp.float32))
    grid = jnp.arange(self.num_timesteps, dtype=jnp.float32)
    return jnp.interp(log_sigma, self._log_sigmas(), grid)

  def sigma_range(self) -> tuple[jax.Array, jax.Array]:
    """(sigma_0, sigma_{T-1}): the first and last table entries."""
    return self.sqrt_recipm1_alphas_cumprod[0], self.sqrt_recipm1_alphas_cumprod[-1]

  def marginal(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sqrt(abar_t), sqrt(1 - abar_t)): table entries at integer t, the log-sigma
    interpolation at floating t."""
    t = jnp.asarray(t)
    if jnp.issubdtype(t.dtype, jnp.integer):
      return self.sqrt_alphas_cumprod[t], self.sqrt_one_minus_alphas_cumprod[t]
    sigma = self.sigma(t)
    a = jax.lax.rsqrt(1.0 + jnp.square(sigma))
    return a, sigma * a


def make_schedule(betas) -> Schedule:
  """Builds a `Schedule` from a beta sequence.

  Args:
    betas: Array-like of shape [T] with entries in (0, 1].

  Returns:
    The schedule; all tables are computed in float64 and cast to float32.
  """
  betas = np.asarray(betas, dtype=np.float64)
  if betas.ndim != 1 or betas.shape[0] < 1:
    raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
  if np.any(betas <= 0.0) or np.any(betas > 1.0):
    raise ValueError("betas must lie in (0, 1]")
  alphas = 1.0 - betas
  alphas_cumprod = np.cumprod(alphas)
  alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
  one_minus = 1.0 - alphas_cumprod
  posterior_variance = betas * (1.0 - alphas_cumprod_prev) / one_minus
  first_nonzero = posterior_variance[1] if betas.shape[0] > 1 else betas[0]
  posterior_log_variance_clipped = np.log(np.append(first_nonzero, posterior_variance[1:]))
  with np.errstate(divide="ignore"):
    sqrt_recip = 1.0 / np.sqrt(alphas_cumprod)
    sqrt_recipm1 = np.sqrt(1.0 / alphas_cumprod - 1.0)
  tables = dict(
      betas=betas,
      alphas_cumprod=alphas_cumprod,
      alphas_cumprod_prev=alphas_cumprod_prev,
      sqrt_alphas_cumprod=np.sqrt(alphas_cumprod),
      sqrt_one_minus_alphas_cumprod=np.sqrt(one_minus),
      sqrt_recip_alphas_cumprod=sqrt_recip,
      sqrt_recipm1_alphas_cumprod=sqrt_recipm1,
      posterior_variance=posterior_variance,
      posterior_log_variance_clipped=posterior_log_variance_clipped,
      posterior_mean_coef1=betas * np.sqrt(alphas_cumprod_prev) / one_minus,
      posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / one_minus,
  )
  return Schedule(**{k: jnp.asarray(v, dtype=jnp.float32) for k, v in tables.items()})


def get_schedule(name: str, num_timesteps: int, **kwargs) -> Schedule:
  """Builds a named schedule.

  Args:
    name: One of 'linear', 'scaled_linear', 'cosine'.
    num_timesteps: Number of diffusion steps T.
    **kwargs: Forwarded to the beta schedule function.

  Returns:
    The schedule.

  Raises:
    ValueError: If `name` is unknown.
  """
  if name not in _BETA_SCHEDULES:
    raise ValueError(f"unknown schedule {name!r}; valid names: {sorted(_BETA_SCHEDULES)}")
  return make_schedule(_BETA_SCHEDULES[name](num_timesteps, **kwargs))


def schedule_from_config(diffusion_config: Any) -> Schedule:
  """The schedule of an experiment's `config.diffusion` block (``schedule``, ``num_timesteps``
  and, for 'linear' and 'scaled_linear', ``beta_start`` / ``beta_end``): what every diffusion
  method trains on."""
  d = diffusion_config
  kwargs = ({"beta_start": d.beta_start, "beta_end": d.beta_end}
            if d.schedule in ("linear", "scaled_linear") else {})
  return get_schedule(d.schedule, d.num_timesteps, **kwargs)


def extract(table: jnp.ndarray, t: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
  """Gathers `table[t]` and reshapes it to broadcast against `x`.

  Args:
    table: Array of shape [T].
    t: Integer timesteps of shape [B].
    x: Array of shape [B, ...].

  Returns:
    Array of shape [B, 1, ..., 1] with x's rank.
  """
  chex.assert_rank(table, 1)
  chex.assert_rank(t, 1)
  chex.assert_type(t, int)
  chex.assert_axis_dimension(x, 0, t.shape[0])
  return table[t].reshape((t.shape[0],) + (1,) * (x.ndim - 1))


def q_sample(schedule: Schedule, x0: jnp.ndarray, t: jnp.ndarray,
             noise: jnp.ndarray) -> jnp.ndarray:
  """Samples x_t ~ q(x_t | x_0) = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise.

  Args:
    schedule: The diffusion schedule.
    x0: Clean data, shape [B, ...].
    t: Integer timesteps in [0, T), shape [B].
    noise: Standard normal noise, same shape as `x0`.

  Returns:
    x_t, same shape as `x0`.
  """
  chex.assert_equal_shape([x0, noise])
  return (extract(schedule.sqrt_alphas_cumprod, t, x0) * x0 +
          extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * noise)


def predict_x0_from_eps(schedule: Schedule, x_t: jnp.ndarray, t: jnp.ndarray,
                        eps: jnp.ndarray) -> jnp.ndarray:
  """Inverts `q_sample`: x_0 = x_t / sqrt(abar_t) - sqrt(1 / abar_t - 1) eps.

  Args:
    schedule: The diffusion schedule.
    x_t: Noisy data, shape [B, ...].
    t: Integer timesteps, shape [B].
    eps: Noise (or its prediction), same shape as `x_t`.

  Returns:
    The x_0 estimate, same shape as `x_t`.
  """
  chex.assert_equal_shape([x_t, eps])
  return (extract(schedule.sqrt_recip_alphas_cumprod, t, x_t) * x_t -
          extract(schedule.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)


def predict_eps_from_x0(schedule: Schedule, x_t: jnp.ndarray, t: jnp.ndarray,
                        x0: jnp.ndarray) -> jnp.ndarray:
  """The noise that maps `x0` to `x_t` at step t (inverse of `predict_x0_from_eps`).

  Args:
    schedule: The diffusion schedule.
    x_t: Noisy data, shape [B, ...].
    t: Integer timesteps, shape [B].
    x0: Clean data (or its prediction), same shape as `x_t`.

  Returns:
    eps, same shape as `x_t`.
  """
  chex.assert_equal_shape([x_t, x0])
  return (extract(schedule.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / extract(
      schedule.sqrt_recipm1_alphas_cumprod, t, x_t)


def q_posterior_mean_variance(schedule: Schedule, x0: jnp.ndarray, x_t: jnp.ndarray,
                              t: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Mean and variance of the posterior q(x_{t-1} | x_t, x_0).

  Args:
    schedule: The diffusion schedule.
    x0: Clean data (or its prediction), shape [B, ...].
    x_t: Noisy data, same shape as `x0`.
    t: Integer timesteps, shape [B].

  Returns:
    (mean, variance, log_variance), each with the shape of `x_t`; the log
    variance is the clipped one (finite at t = 0).
  """
  chex.assert_equal_shape([x0, x_t])
  mean = (extract(schedule.posterior_mean_coef1, t, x_t) * x0 +
          extract(schedule.posterior_mean_coef2, t, x_t) * x_t)
  variance = jnp.broadcast_to(extract(schedule.posterior_variance, t, x_t), x_t.shape)
  log_variance = jnp.broadcast_to(extract(schedule.posterior_log_variance_clipped, t, x_t),
                                  x_t.shape)
  return mean, variance, log_variance
