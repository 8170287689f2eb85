"""Training losses for epsilon-prediction diffusion models."""

from typing import Callable

import chex
import jax
import jax.numpy as jnp

from jgen.diffusion.schedules import Schedule, q_sample

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]

LOSS_TYPES = ("mse", "l1")


def ddpm_loss(
    eps_fn: EpsFn,
    schedule: Schedule,
    x0: jax.Array,
    rng: jax.Array,
    *,
    loss_type: str = "mse",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The DDPM 'simple' loss E_{t, eps} ||eps - eps_fn(x_t, t)||^2 (Ho et al. 2020).

  `rng` is split as `t_rng, noise_rng = jax.random.split(rng)`; t is drawn
  uniformly from {0, ..., T-1} with `t_rng` and the noise with `noise_rng`.

  Args:
    eps_fn: Noise predictor, (x_t [B, ...] float32, t [B] int32) -> eps.
    schedule: The diffusion schedule.
    x0: Clean data, shape [B, ...].
    rng: PRNG key.
    loss_type: 'mse' (squared error) or 'l1' (absolute error).

  Returns:
    (loss, metrics): the batch mean of the per-example mean-over-pixels
    error, and {'loss': loss}.

  Raises:
    ValueError: If `loss_type` is unknown.
  """
  if loss_type not in LOSS_TYPES:
    raise ValueError(f"unknown loss_type {loss_type!r}; valid: {list(LOSS_TYPES)}")
  chex.assert_rank(x0, {2, 3, 4, 5})
  batch = x0.shape[0]
  t_rng, noise_rng = jax.random.split(rng)
  t = jax.random.randint(t_rng, (batch,), 0, schedule.num_timesteps, dtype=jnp.int32)
  noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
  x_t = q_sample(schedule, x0, t, noise)
  eps = eps_fn(x_t, t)
  chex.assert_equal_shape([eps, noise])
  diff = eps - noise
  err = jnp.square(diff) if loss_type == "mse" else jnp.abs(diff)
  per_example = jnp.mean(err.reshape(batch, -1), axis=1)
  loss = jnp.mean(per_example)
  return loss, {"loss": loss}
