"""The eps, x0 and v predictions of DDPM's discrete chain, as functions of a schedule.

Each function is the `jgen.ops.processes.Process` method of the same meaning applied to a
`Schedule` (which is the discrete VP process); they keep the names every DDPM-family module
and test has used. Any other process takes the same calls (`to_eps_fn(model_fn, process, kind)`).

With alpha_t = sqrt(abar_t) and sigma_t = sqrt(1 - abar_t) (so alpha_t^2 +
sigma_t^2 = 1), the forward process is x_t = alpha_t x0 + sigma_t eps and the
velocity of Salimans & Ho (2022) is v = alpha_t eps - sigma_t x0. Given x_t
and t, any one of (eps, x0, v) determines the other two:

  from eps: x0 = (x_t - sigma_t eps) / alpha_t
  from x0:  eps = (x_t - alpha_t x0) / sigma_t
  from v:   x0 = alpha_t x_t - sigma_t v,   eps = sigma_t x_t + alpha_t v

`to_eps_fn` turns a network of any parameterization into the
`eps_fn(x_t, t)` that every sampler and solver of `jgen.diffusion` takes, and
guidance wraps one `eps_fn` into another.

Loss weightings. For a prediction converted from eps_hat at a fixed x_t, the
errors are proportional: x0 - x0_hat = -(sigma_t / alpha_t)(eps - eps_hat) and
v - v_hat = (eps - eps_hat) / alpha_t. With SNR_t = alpha_t^2 / sigma_t^2:

  eps-MSE ||eps - eps_hat||^2                    (Ho et al. 2020, 'simple')
  x0-MSE  ||x0 - x0_hat||^2 = eps-MSE / SNR_t
  v-MSE   ||v - v_hat||^2   = (1 + SNR_t) x0-MSE = (1 + 1 / SNR_t) eps-MSE

so v-MSE is the 'SNR + 1' weighting of the x0 error (Salimans & Ho 2022,
Sec. 4) and, relative to eps-MSE, up-weights high-noise steps (SNR -> 0) and
tends to the eps loss at low noise. `eps_mse_weight` returns these factors.

Timesteps. Integer t [B] gathers the schedule's tables. Floating t [B] (the
fractional timesteps the Karras solvers in `jgen.diffusion.solvers` pass)
interpolates log sigma_edm(t) = log sqrt((1 - abar_t) / abar_t) linearly
between neighbouring integer steps (`timestep_to_sigma`, the inverse of
`sigma_to_timestep`), then alpha_t = 1 / sqrt(1 + sigma_edm^2) and
sigma_t = sigma_edm alpha_t; at integer values both paths agree.
"""

from typing import Callable

import chex
import jax
import jax.numpy as jnp

from jgen.ops.processes import Process, check_prediction
from jgen.ops.schedules import Schedule

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]

# The parameterizations of the discrete chain's networks (a velocity network is a process's,
# `jgen.ops.processes.PREDICTIONS`).
PREDICTIONS = ("eps", "x0", "v")


def _check_prediction(prediction: str, what: str = "prediction") -> None:
  if prediction not in PREDICTIONS:
    raise ValueError(f"unknown {what} {prediction!r}; valid: {list(PREDICTIONS)}")


def timestep_to_sigma(schedule: Schedule, t: jax.Array) -> jax.Array:
  """The Karras et al. (2022) noise level sigma(t) = sqrt((1 - abar_t) / abar_t)
  (`Schedule.sigma`: log sigma interpolated between integer steps, t clamped to [0, T - 1]).

  Args:
    schedule: The diffusion schedule.
    t: Timesteps of any shape, integer or floating point.

  Returns:
    float32 sigmas with the shape of `t`.
  """
  return schedule.sigma(t)


def sigma_to_timestep(schedule: Schedule, sigma: jax.Array) -> jax.Array:
  """The (fractional) timestep of a noise level; inverse of `timestep_to_sigma`
  (`Schedule.time_of_sigma`).

  Args:
    schedule: The diffusion schedule.
    sigma: Positive noise levels of any shape.

  Returns:
    float32 timesteps in [0, T - 1] with the shape of `sigma`.
  """
  return schedule.time_of_sigma(sigma)


def alpha_sigma(schedule: Process, t: jax.Array,
                x: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """alpha_t = sqrt(abar_t) and sigma_t = sqrt(1 - abar_t) at timesteps t (`marginal`).

  Args:
    schedule: The diffusion schedule (or any process: its (a(t), s(t))).
    t: Timesteps of shape [B]: integer (table lookup) or floating point
      (log-sigma interpolation, see the module docstring).
    x: Optional array of shape [B, ...]; if given the results are reshaped to
      [B, 1, ..., 1] to broadcast against it.

  Returns:
    (alpha, sigma), float32.
  """
  t = jnp.asarray(t)
  chex.assert_rank(t, 1)
  alpha, sigma = schedule.marginal(t)
  if x is not None:
    chex.assert_axis_dimension(x, 0, t.shape[0])
    shape = (t.shape[0],) + (1,) * (x.ndim - 1)
    alpha, sigma = alpha.reshape(shape), sigma.reshape(shape)
  return alpha, sigma


def snr(schedule: Process, t: jax.Array) -> jax.Array:
  """Signal-to-noise ratio alpha_t^2 / sigma_t^2 = abar_t / (1 - abar_t), shape [B]."""
  alpha, sigma = alpha_sigma(schedule, t)
  return jnp.square(alpha / sigma)


def convert_prediction(schedule: Process, x_t: jax.Array, t: jax.Array, pred: jax.Array, *,
                       source: str, target: str) -> jax.Array:
  """Converts a denoiser output between the 'eps', 'x0' and 'v' parameterizations
  (`Process.convert`, which also knows 'velocity').

  Args:
    schedule: The diffusion schedule (or any process).
    x_t: Noisy data, shape [B, ...].
    t: Timesteps of shape [B], integer or floating point.
    pred: The prediction in the `source` parameterization, shape of `x_t`.
    source: 'eps', 'x0' or 'v'.
    target: 'eps', 'x0' or 'v'.

  Returns:
    The prediction in the `target` parameterization, shape of `x_t`.

  Raises:
    ValueError: If `source` or `target` is unknown.
  """
  check_prediction(source, "source")
  check_prediction(target, "target")
  chex.assert_equal_shape([x_t, pred])
  chex.assert_rank(jnp.asarray(t), 1)
  return schedule.convert(x_t, t, pred, source=source, target=target)


def predict_x0(schedule: Process, x_t: jax.Array, t: jax.Array, pred: jax.Array, *,
               prediction: str) -> jax.Array:
  """The x0 estimate from a prediction of kind `prediction` ('eps', 'x0' or 'v')."""
  return convert_prediction(schedule, x_t, t, pred, source=prediction, target="x0")


def predict_eps(schedule: Process, x_t: jax.Array, t: jax.Array, pred: jax.Array, *,
                prediction: str) -> jax.Array:
  """The eps estimate from a prediction of kind `prediction` ('eps', 'x0' or 'v')."""
  return convert_prediction(schedule, x_t, t, pred, source=prediction, target="eps")


def v_target(schedule: Process, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """The velocity v = alpha_t noise - sigma_t x0 (Salimans & Ho 2022, Sec. 4).

  Arguments follow `q_sample(schedule, x0, t, noise)`.

  Args:
    schedule: The diffusion schedule.
    x0: Clean data, shape [B, ...].
    t: Timesteps of shape [B], integer or floating point.
    noise: The noise of x_t = alpha_t x0 + sigma_t noise, shape of `x0`.

  Returns:
    v, shape of `x0`.
  """
  chex.assert_equal_shape([x0, noise])
  chex.assert_rank(jnp.asarray(t), 1)
  return schedule.target(x0, noise, t, "v")


def training_target(schedule: Process, x0: jax.Array, t: jax.Array, noise: jax.Array, *,
                    prediction: str) -> jax.Array:
  """The regression target of a network trained in parameterization `prediction`
  (`Process.target`).

  Args:
    schedule: The diffusion schedule (or any process).
    x0: Clean data, shape [B, ...].
    t: Timesteps of shape [B].
    noise: The noise of x_t, shape of `x0`.
    prediction: 'eps' (returns noise), 'x0' (returns x0), 'v' (`v_target`) or, for a
      process, 'velocity'.

  Returns:
    The target, shape of `x0`.
  """
  check_prediction(prediction)
  chex.assert_equal_shape([x0, noise])
  return schedule.target(x0, noise, t, prediction)


def eps_mse_weight(schedule: Schedule, t: jax.Array, *, prediction: str) -> jax.Array:
  """Factor w_t with ||target - pred||^2 = w_t ||eps - eps_hat||^2 at fixed x_t.

  eps: 1; x0: 1 / SNR_t; v: 1 + 1 / SNR_t = 1 / alpha_t^2 (module docstring).
  Dividing a per-example `prediction`-space MSE by w_t gives the eps-MSE;
  multiplying an eps-MSE by w_t trains the eps network with that weighting.

  Args:
    schedule: The diffusion schedule.
    t: Timesteps of shape [B].
    prediction: 'eps', 'x0' or 'v'.

  Returns:
    float32 weights of shape [B].
  """
  _check_prediction(prediction)
  alpha, sigma = alpha_sigma(schedule, t)
  if prediction == "eps":
    return jnp.ones_like(alpha)
  if prediction == "x0":
    return jnp.square(sigma / alpha)
  return 1.0 / jnp.square(alpha)


def to_eps_fn(model_fn: ModelFn, schedule: Process, prediction: str) -> ModelFn:
  """Adapts a denoiser of any parameterization to `eps_fn(x_t, t) -> eps`.

  Args:
    model_fn: (x_t [B, ...], t [B]) -> prediction of kind `prediction`.
    schedule: The diffusion schedule (or any process) the model was trained on.
    prediction: 'eps' (returns `model_fn` itself), 'x0', 'v' or 'velocity'.

  Returns:
    The eps_fn; it accepts integer or floating-point t.

  Raises:
    ValueError: If `prediction` is unknown.
  """
  check_prediction(prediction)
  if prediction == "eps":
    return model_fn

  def eps_fn(x_t, t):
    return predict_eps(schedule, x_t, t, model_fn(x_t, t), prediction=prediction)

  return eps_fn


def to_x0_fn(model_fn: ModelFn, schedule: Process, prediction: str) -> ModelFn:
  """Adapts a denoiser of any parameterization to `x0_fn(x_t, t) -> x0` (a D(x))."""
  check_prediction(prediction)
  if prediction == "x0":
    return model_fn

  def x0_fn(x_t, t):
    return predict_x0(schedule, x_t, t, model_fn(x_t, t), prediction=prediction)

  return x0_fn
