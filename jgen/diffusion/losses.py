"""Training losses of diffusion models: DDPM's chain (`ddpm_loss`) and continuous processes
(`continuous_loss`: flow matching, EDM)."""

from typing import Callable

import chex
import jax
import jax.numpy as jnp

from jgen.diffusion.parameterization import training_target
from jgen.ops.processes import Process
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


def continuous_loss(
    model_fn: EpsFn,
    process: Process,
    x0: jax.Array,
    rng: jax.Array,
    *,
    sample_times: Callable[[jax.Array, int], jax.Array],
    prediction: str,
    weight_fn: Callable[[jax.Array], jax.Array] | None = None,
    loss_type: str = "mse",
    noise: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """E_{t ~ p(t), eps} w(t) ||target(x0, eps, t) - model_fn(x_t, t)||^2 on a continuous process.

  x_t = a(t) x0 + s(t) eps (`process.noised`) and the target is what a network of kind
  `prediction` regresses to (`process.target`: u = eps - x0 for a velocity on the linear path,
  flow matching's; x0 for EDM's denoiser). `rng` is split as `t_rng, noise_rng`.

  Args:
    model_fn: (x_t [B, ...], t [B] float32) -> a `prediction` at process time t.
    process: The noising process.
    x0: Clean data, shape [B, ...].
    rng: PRNG key.
    sample_times: (rng, batch) -> float32 times [B] from the training distribution p(t).
    prediction: What `model_fn` predicts ('velocity', 'eps', 'x0' or 'v').
    weight_fn: t [B] -> w(t) [B] (None: 1).
    loss_type: 'mse' or 'l1'.
    noise: The eps of each example, shape of `x0` (None: drawn with `noise_rng`; reflow passes
      the noise its couples were drawn from).

  Returns:
    (loss, metrics): the batch mean of w(t) times the per-example mean-over-pixels error;
    metrics {'loss': loss, 'unweighted': the same without w}.
  """
  if loss_type not in LOSS_TYPES:
    raise ValueError(f"unknown loss_type {loss_type!r}; valid: {list(LOSS_TYPES)}")
  batch = x0.shape[0]
  t_rng, noise_rng = jax.random.split(rng)
  t = sample_times(t_rng, batch)
  chex.assert_shape(t, (batch,))
  if noise is None:
    noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
  chex.assert_equal_shape([x0, noise])
  pred = model_fn(process.noised(x0, t, noise), t)
  target = process.target(x0, noise, t, prediction)
  chex.assert_equal_shape([pred, target])
  diff = pred - target
  err = jnp.square(diff) if loss_type == "mse" else jnp.abs(diff)
  per_example = jnp.mean(err.reshape(batch, -1), axis=1)
  weights = jnp.ones_like(per_example) if weight_fn is None else weight_fn(t)
  loss = jnp.mean(weights * per_example)
  return loss, {"loss": loss, "unweighted": jnp.mean(per_example)}
