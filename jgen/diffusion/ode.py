"""Samplers in a process's own time t: Euler, Heun and the midpoint rule on the
probability-flow ODE, and Euler-Maruyama on the reverse SDE (`sde_sample`).

They integrate the probability-flow ODE dx/dt = `process.ode_drift` (a'(t) x0_hat + s'(t)
eps_hat; the network's output itself for a velocity model) from the prior at t_max down to
t_min on the grid `ode_times`, and are the samplers of flow matching and rectified flow (the
`Linear` process, whose prior sits at sigma = inf, out of reach of the Karras sigma-space
solvers of `jgen.diffusion.solvers`). On the linear path Euler's step from t to t' is
x' = (1 - t') x0_hat + t' eps_hat, DDIM's step, whatever the grid.

Calling convention of every sampler: `(model_fn, process, rng, shape, *, prediction, steps,
...)`, one `jax.lax.scan`, deterministic given x_T (drawn from the first key of
`jax.random.split(rng)`, N(0, prior_std^2 I)).
"""

from typing import Callable, Sequence

import chex
import jax
import jax.numpy as jnp

from jgen.diffusion.samplers import initial_noise
from jgen.ops.processes import Process

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]

ODE_METHODS = ("euler", "heun", "midpoint")


def ode_times(process: Process, steps: int, *, shift: float = 1.0) -> jax.Array:
  """`steps + 1` decreasing times from t_max to t_min: u = linspace(1, 0, steps + 1) warped by
  u' = shift u / (1 + (shift - 1) u) (Stable Diffusion 3's timestep shift, Esser et al. 2024,
  Eq. 23; shift > 1 spends more steps at high noise), t = t_min + u' (t_max - t_min).

  Args:
    process: The process.
    steps: Static number of intervals (>= 1).
    shift: Static warp (1: uniform in t).

  Returns:
    float32 array of shape [steps + 1].
  """
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  if shift <= 0:
    raise ValueError(f"shift must be > 0, got {shift}")
  u = jnp.linspace(1.0, 0.0, steps + 1, dtype=jnp.float32)
  u = shift * u / (1.0 + (shift - 1.0) * u)
  return process.t_min + u * (process.t_max - process.t_min)


def _drift(model_fn: ModelFn, process: Process, prediction: str, batch: int, clip: bool
           ) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`drift(x, t)` of the probability-flow ODE at scalar t, x0_hat clipped to [-1, 1] if
  `clip` (eps_hat then made consistent with it)."""

  def drift(x, t):
    tb = jnp.broadcast_to(t, (batch,))
    pred = model_fn(x, tb)
    chex.assert_equal_shape([pred, x])
    if not clip:
      return process.ode_drift(x, tb, pred, prediction)
    x0, _ = process.x0_eps(x, tb, pred, prediction)
    x0 = jnp.clip(x0, -1.0, 1.0)
    return process.ode_drift(x, tb, x0, "x0")

  return drift


def ode_sample(
    model_fn: ModelFn,
    process: Process,
    rng: jax.Array,
    shape: Sequence[int],
    *,
    prediction: str = "velocity",
    steps: int = 50,
    method: str = "euler",
    shift: float = 1.0,
    clip_denoised: bool = False,
    x_T: jax.Array | None = None,
) -> jax.Array:
  """Integrates the probability-flow ODE from t_max to t_min on `ode_times`.

  With d = drift(x_i, t_i) and dt = t_{i+1} - t_i:
    euler:    x_{i+1} = x_i + dt d                                  (1 evaluation per step)
    heun:     x' = x_i + dt d, x_{i+1} = x_i + dt (d + drift(x', t_{i+1})) / 2
    midpoint: x_{i+1} = x_i + dt drift(x_i + dt d / 2, t_i + dt / 2)   (2 evaluations)
  Heun's last step stays Euler when it ends on the data (`process.ends_clean`), as in Karras
  et al.'s Algorithm 1: 2 steps - 1 evaluations. When s(t_min) > 0 (VP, VE, EDM) the result
  is the x0 estimate at t_min (one more evaluation, score_sde's final denoising).

  Args:
    model_fn: (x_t [B, ...] float32, t [B] float32) -> a `prediction` at process time t.
    process: The noising process (`jgen.ops.processes`).
    rng: PRNG key (only draws x_T).
    shape: Static output shape [B, ...].
    prediction: What `model_fn` predicts ('velocity', 'eps', 'x0' or 'v').
    steps: Static number of steps.
    method: Static 'euler', 'heun' or 'midpoint'.
    shift: Static timestep shift of `ode_times`.
    clip_denoised: Clip x0_hat to [-1, 1] in every drift.
    x_T: Optional starting noise of shape `shape` (at t_max).

  Returns:
    The samples, shape `shape`.
  """
  if method not in ODE_METHODS:
    raise ValueError(f"unknown ODE method {method!r}; valid: {list(ODE_METHODS)}")
  x, _, shape = initial_noise(rng, shape, x_T, process.prior_std)
  ts = ode_times(process, steps, shift=shift)
  drift = _drift(model_fn, process, prediction, shape[0], clip_denoised)
  euler_last = jnp.arange(steps) == steps - 1 if process.ends_clean else jnp.zeros(steps, bool)

  def step(x, inputs):
    t, t_next, last = inputs
    dt = t_next - t
    d = drift(x, t)
    if method == "midpoint":
      return x + dt * drift(x + 0.5 * dt * d, t + 0.5 * dt), None
    x_euler = x + dt * d
    if method == "euler":
      return x_euler, None

    def correct(_):
      return x + dt * 0.5 * (d + drift(x_euler, t_next))

    return jax.lax.cond(last, lambda _: x_euler, correct, None), None

  x, _ = jax.lax.scan(step, x, (ts[:-1], ts[1:], euler_last))
  if process.ends_clean:
    return x
  t_end = jnp.full((shape[0],), ts[-1])
  x0, _ = process.x0_eps(x, t_end, model_fn(x, t_end), prediction)
  return jnp.clip(x0, -1.0, 1.0) if clip_denoised else x0


def sde_sample(
    model_fn: ModelFn,
    process: Process,
    rng: jax.Array,
    shape: Sequence[int],
    *,
    prediction: str = "eps",
    steps: int = 100,
    shift: float = 1.0,
    clip_denoised: bool = False,
    x_T: jax.Array | None = None,
) -> jax.Array:
  """Euler-Maruyama on the reverse-time SDE dx = [f x + g^2 eps_hat / s] dt + g dw from t_max
  to t_min on `ode_times` (Song et al. 2021, the predictor of their Algorithm 2 without
  corrector):

    x_{i+1} = x_i + dt_i drift(x_i, t_i) + g(t_i) sqrt(-dt_i) z_i,   dt_i = t_{i+1} - t_i < 0,

  z_i ~ N(0, I) from `fold_in(step_rng, i)`, no noise on the last step; the result is the x0
  estimate at t_min unless the process ends on the data (`ends_clean`). The drift and g come
  from `process.reverse_sde_drift` and `process.sde_coefficients`; a process whose g^2 is
  infinite at t_max (the linear path at t = 1) starts one step in.

  Args:
    model_fn: (x_t [B, ...] float32, t [B] float32) -> a `prediction` at process time t.
    process: The noising process.
    rng: PRNG key: x_T from its first split, the noise from the second.
    shape: Static output shape [B, ...].
    prediction: What `model_fn` predicts.
    steps: Static number of steps.
    shift: Static timestep shift of `ode_times`.
    clip_denoised: Clip the x0 estimates to [-1, 1].
    x_T: Optional starting noise of shape `shape` (at t_max).

  Returns:
    The samples, shape `shape`.
  """
  x, step_rng, shape = initial_noise(rng, shape, x_T, process.prior_std)
  ts = ode_times(process, steps, shift=shift)
  if process.ends_clean:
    # g^2 = 2 s^2 (s'/s - a'/a) is infinite where a = 0 (the prior of the linear path).
    ts = ts.at[0].set(ts[0] - 1e-3 * (ts[0] - ts[-1]))
  batch = shape[0]

  def predict(x, t):
    tb = jnp.broadcast_to(t, (batch,))
    pred = model_fn(x, tb)
    chex.assert_equal_shape([pred, x])
    if clip_denoised:
      x0, _ = process.x0_eps(x, tb, pred, prediction)
      return jnp.clip(x0, -1.0, 1.0), "x0"
    return pred, prediction

  def step(x, inputs):
    i, t, t_next = inputs
    dt = t_next - t
    pred, kind = predict(x, t)
    tb = jnp.broadcast_to(t, (batch,))
    _, g2 = process.sde_coefficients(t)
    noise = jax.random.normal(jax.random.fold_in(step_rng, i), shape, x.dtype)
    last = i == steps - 1
    scale = jnp.where(last, 0.0, jnp.sqrt(jnp.maximum(g2 * -dt, 0.0)))
    return x + dt * process.reverse_sde_drift(x, tb, pred, kind) + scale * noise, None

  x, _ = jax.lax.scan(step, x, (jnp.arange(steps), ts[:-1], ts[1:]))
  if process.ends_clean:
    return x
  t_end = jnp.full((batch,), ts[-1])
  pred, kind = predict(x, ts[-1])
  x0, _ = process.x0_eps(x, t_end, pred, kind)
  return x0
