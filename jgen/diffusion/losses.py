"""Training losses of diffusion models (eps, x0 or v prediction)."""

from typing import Callable

import chex
import jax
import jax.numpy as jnp

from jgen.diffusion.parameterization import training_target
from jgen.ops.schedules import Schedule, q_sample

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]

LOSS_TYPES = ("mse", "l1")


def ddpm_loss(
    eps_fn: EpsFn,
    schedule: Schedule,
    x0: jax.Array,
    rng: jax.Array,
    *,
    loss_type: str = "mse",
    prediction: str = "eps",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The DDPM 'simple' loss E_{t, eps} ||eps - eps_fn(x_t, t)||^2 (Ho et al. 2020).

  With `prediction` 'x0' or 'v' the network predicts that quantity instead and the target is
  `jgen.diffusion.training_target` (x0, or v = alpha_t eps - sigma_t x0; the implied weightings
  of the eps error are in `jgen.diffusion.parameterization`).

  `rng` is split as `t_rng, noise_rng = jax.random.split(rng)`; t is drawn
  uniformly from {0, ..., T-1} with `t_rng` and the noise with `noise_rng`.

  Args:
    eps_fn: Noise predictor, (x_t [B, ...] float32, t [B] int32) -> eps.
    schedule: The diffusion schedule.
    x0: Clean data, shape [B, ...].
    rng: PRNG key.
    loss_type: 'mse' (squared error) or 'l1' (absolute error).
    prediction: what `eps_fn` predicts: 'eps', 'x0' or 'v'.

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
  pred = eps_fn(x_t, t)
  target = noise if prediction == "eps" else training_target(schedule, x0, t, noise,
                                                              prediction=prediction)
  chex.assert_equal_shape([pred, target])
  diff = pred - target
  err = jnp.square(diff) if loss_type == "mse" else jnp.abs(diff)
  per_example = jnp.mean(err.reshape(batch, -1), axis=1)
  loss = jnp.mean(per_example)
  return loss, {"loss": loss}
