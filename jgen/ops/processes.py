"""Gaussian noising processes x_t = a(t) x0 + s(t) eps on one interface.

A process is its marginal coefficients (a(t), s(t)) at its own time t (score_sde's `SDE`:
`marginal_prob`, `prior_sampling`; Karras et al. 2022, Sec. 2). Everything a loss or a sampler
needs derives from them:

* noise level sigma(t) = s / a: every process is the EDM process x / a = x0 + sigma eps
  reparameterized (Karras et al. 2022, Eq. 4), so a denoiser trained on one drives another;
* predictions, with x = a x0 + s eps at time t and r = sqrt(a^2 + s^2): eps; x0 (EDM's
  denoiser D(x / a; sigma) is this x0); v = (a eps - s x0) / r (Salimans & Ho 2022: alpha eps
  - sigma x0 for VP, where r = 1); the velocity u = dx/dt = a' x0 + s' eps (flow matching;
  u = eps - x0 on the linear path). Any one gives (x0, eps): x0 = (x - s eps) / a and
  eps = (x - a x0) / s; x0 = (a x - s r v) / r^2 and eps = (s x + a r v) / r^2; x0 = (s' x -
  s u) / det and eps = (a u - a' x) / det with det = a s' - s a';
* the probability-flow ODE dx/dt = a' E[x0 | x] + s' E[eps | x], and the reverse SDE
  dx = [f x + g^2 eps / s] dt + g dw with f = a' / a, g^2 = 2 s^2 (s' / s - f) (score =
  -eps / s; the ODE drift is f x + g^2 eps / (2 s), the same expression).

Implementations: `jgen.ops.schedules.Schedule` (DDPM's discrete chain, integer t in [0, T)),
`VP` (score_sde's continuous VP SDE, linear beta(t)), `VE` (geometric sigma), `EDM` (a = 1,
s = t = sigma) and `Linear` (a = 1 - t, s = t: rectified flow / conditional OT flow matching).
Derivatives a', s' come from `jax.jvp` of the marginal unless a process gives them in closed
form. Times are float32 arrays of any shape; coefficients have the shape of t.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

PREDICTIONS = ("eps", "x0", "v", "velocity")


def check_prediction(prediction: str, what: str = "prediction") -> None:
  """Raises ValueError naming the valid kinds if `prediction` is not one of `PREDICTIONS`."""
  if prediction not in PREDICTIONS:
    raise ValueError(f"unknown {what} {prediction!r}; valid: {list(PREDICTIONS)}")


def _bcast(c: jax.Array, x: jax.Array) -> jax.Array:
  """A coefficient of shape [B] (or scalar) reshaped to broadcast against x [B, ...]."""
  c = jnp.asarray(c, jnp.float32)
  if c.ndim == 0:
    return c
  return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))


@struct.dataclass
class Process:
  """The interface; subclasses define `marginal`, `t_min`, `t_max`, `prior_std` and, where they
  have a closed form, `time_of_sigma` and `marginal_derivative`.

  Attributes:
    variance_preserving: a^2 + s^2 = 1 by construction, so v needs no normalization (r = 1).
    ends_clean: s(t_min) = 0, so an ODE sampler ends on the data without a final denoising.
  """

  variance_preserving = False
  ends_clean = False  # s(t_min) = 0: a sampler's last step lands on data, not near it

  def marginal(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a(t), s(t)) of x_t = a x0 + s eps."""
    raise TypeError(f"{type(self).__name__} does not define marginal(t)")

  @property
  def t_min(self) -> float:
    """The cleanest time a sampler ends at."""
    raise TypeError(f"{type(self).__name__} does not define t_min")

  @property
  def t_max(self) -> float:
    """The time of the prior."""
    raise TypeError(f"{type(self).__name__} does not define t_max")

  @property
  def prior_std(self) -> float:
    """x_{t_max} ~ N(0, prior_std^2 I)."""
    raise TypeError(f"{type(self).__name__} does not define prior_std")

  def marginal_derivative(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a'(t), s'(t)), by forward-mode differentiation of `marginal`."""
    t = jnp.asarray(t, jnp.float32)
    _, (da, ds) = jax.jvp(self.marginal, (t,), (jnp.ones_like(t),))
    return da, ds

  def sigma(self, t: jax.Array) -> jax.Array:
    """The EDM noise level sigma(t) = s(t) / a(t)."""
    a, s = self.marginal(t)
    return s / a

  def time_of_sigma(self, sigma: jax.Array) -> jax.Array:
    """The time whose noise level is `sigma` (inverse of `sigma`)."""
    raise TypeError(f"{type(self).__name__} does not define time_of_sigma")

  def sigma_range(self) -> tuple[jax.Array, jax.Array]:
    """(sigma(t_min), sigma(t_max)): the noise levels of the Karras sigma-space samplers."""
    return self.sigma(jnp.float32(self.t_min)), self.sigma(jnp.float32(self.t_max))

  def prior(self, rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """x_{t_max} ~ N(0, prior_std^2 I), float32."""
    return self.prior_std * jax.random.normal(rng, shape, jnp.float32)

  def noised(self, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = a(t) x0 + s(t) noise; t has shape [B] (or is a scalar)."""
    a, s = self.marginal(t)
    return _bcast(a, x0) * x0 + _bcast(s, x0) * noise

  def x0_eps(self, x: jax.Array, t: jax.Array, pred: jax.Array, prediction: str
             ) -> tuple[jax.Array, jax.Array]:
    """(x0, eps) consistent with x at time t and a prediction of kind `prediction`."""
    check_prediction(prediction)
    a, s = (_bcast(c, x) for c in self.marginal(t))
    if prediction == "eps":
      return (x - s * pred) / a, pred
    if prediction == "x0":
      return pred, (x - a * pred) / s
    if prediction == "v" and self.variance_preserving:
      return a * x - s * pred, s * x + a * pred
    if prediction == "v":
      r2 = a * a + s * s
      r = jnp.sqrt(r2)
      return (a * x - s * r * pred) / r2, (s * x + a * r * pred) / r2
    da, ds = (_bcast(c, x) for c in self.marginal_derivative(t))
    det = a * ds - s * da
    return (ds * x - s * pred) / det, (a * pred - da * x) / det

  def convert(self, x: jax.Array, t: jax.Array, pred: jax.Array, *, source: str,
              target: str) -> jax.Array:
    """A prediction of kind `source` as one of kind `target` (module docstring)."""
    check_prediction(source, "source")
    check_prediction(target, "target")
    if source == target:
      return pred
    x0, eps = self.x0_eps(x, t, pred, source)
    return self.target(x0, eps, t, target)

  def target(self, x0: jax.Array, eps: jax.Array, t: jax.Array, prediction: str) -> jax.Array:
    """What a network of kind `prediction` regresses to for x_t = a x0 + s eps."""
    check_prediction(prediction)
    if prediction == "eps":
      return eps
    if prediction == "x0":
      return x0
    if prediction == "v":
      a, s = (_bcast(c, x0) for c in self.marginal(t))
      if self.variance_preserving:
        return a * eps - s * x0
      return (a * eps - s * x0) / jnp.sqrt(a * a + s * s)
    da, ds = (_bcast(c, x0) for c in self.marginal_derivative(t))
    return da * x0 + ds * eps

  def ode_drift(self, x: jax.Array, t: jax.Array, pred: jax.Array, prediction: str
                ) -> jax.Array:
    """dx/dt of the probability-flow ODE: a'(t) x0_hat + s'(t) eps_hat (a velocity prediction
    is returned as it is)."""
    if prediction == "velocity":
      return pred
    x0, eps = self.x0_eps(x, t, pred, prediction)
    return self.target(x0, eps, t, "velocity")

  def sde_coefficients(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(f(t), g(t)^2) of the forward SDE dx = f x dt + g dw that has these marginals."""
    a, s = self.marginal(t)
    da, ds = self.marginal_derivative(t)
    f = da / a
    return f, 2.0 * s * (ds - f * s)

  def reverse_sde_drift(self, x: jax.Array, t: jax.Array, pred: jax.Array, prediction: str
                        ) -> jax.Array:
    """The drift f x + g^2 eps_hat / s of the reverse-time SDE (dt < 0), whose diffusion is g."""
    _, eps = self.x0_eps(x, t, pred, prediction)
    f, g2 = self.sde_coefficients(t)
    _, s = self.marginal(t)
    return _bcast(f, x) * x + _bcast(g2 / s, x) * eps


@struct.dataclass
class VP(Process):
  """score_sde's VP SDE: beta(t) = beta_min + t (beta_max - beta_min) on t in [eps, 1],
  log a(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2, s = sqrt(1 - a^2)
  (Song et al. 2021, Eq. 33; DDPM's linear betas are beta_min = 0.1, beta_max = 20 at T = 1000)."""

  beta_min: float = struct.field(pytree_node=False, default=0.1)
  beta_max: float = struct.field(pytree_node=False, default=20.0)
  eps: float = struct.field(pytree_node=False, default=1e-3)

  variance_preserving = True

  def _log_a(self, t):
    t = jnp.asarray(t, jnp.float32)
    return -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

  def marginal(self, t):
    log_a = self._log_a(t)
    return jnp.exp(log_a), jnp.sqrt(-jnp.expm1(2.0 * log_a))

  t_min = property(lambda self: self.eps)
  t_max = property(lambda self: 1.0)
  prior_std = property(lambda self: 1.0)

  def time_of_sigma(self, sigma):
    # a^2 = 1 / (1 + sigma^2): solve d t^2 / 4 + b0 t / 2 - log(1 + sigma^2) / 2 = 0 for t > 0.
    c = 0.5 * jnp.log1p(jnp.square(jnp.asarray(sigma, jnp.float32)))
    d, b0 = self.beta_max - self.beta_min, self.beta_min
    return (-0.5 * b0 + jnp.sqrt(0.25 * b0 * b0 + d * c)) / (0.5 * d)


@struct.dataclass
class VE(Process):
  """score_sde's VE SDE: a = 1, s(t) = sigma_min (sigma_max / sigma_min)^t on [0, 1]; the
  prior is N(0, sigma_max^2 I)."""

  sigma_min: float = struct.field(pytree_node=False, default=0.01)
  sigma_max: float = struct.field(pytree_node=False, default=50.0)

  def marginal(self, t):
    t = jnp.asarray(t, jnp.float32)
    s = self.sigma_min * jnp.exp(t * math.log(self.sigma_max / self.sigma_min))
    return jnp.ones_like(t), s

  t_min = property(lambda self: 0.0)
  t_max = property(lambda self: 1.0)
  prior_std = property(lambda self: self.sigma_max)

  def time_of_sigma(self, sigma):
    sigma = jnp.asarray(sigma, jnp.float32)
    return jnp.log(sigma / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)


@struct.dataclass
class EDM(Process):
  """Karras et al. (2022): a = 1, s = sigma = t on [sigma_min, sigma_max], the prior
  N(0, sigma_max^2 I) (the preconditioning of its denoiser is `jgen.diffusion.edm`'s)."""

  sigma_min: float = struct.field(pytree_node=False, default=0.002)
  sigma_max: float = struct.field(pytree_node=False, default=80.0)

  def marginal(self, t):
    t = jnp.asarray(t, jnp.float32)
    return jnp.ones_like(t), t

  def marginal_derivative(self, t):
    t = jnp.asarray(t, jnp.float32)
    return jnp.zeros_like(t), jnp.ones_like(t)

  t_min = property(lambda self: self.sigma_min)
  t_max = property(lambda self: self.sigma_max)
  prior_std = property(lambda self: self.sigma_max)

  def time_of_sigma(self, sigma):
    return jnp.asarray(sigma, jnp.float32)


@struct.dataclass
class Linear(Process):
  """The straight path x_t = (1 - t) x0 + t eps on [0, 1] of rectified flow (Liu et al. 2023)
  and conditional OT flow matching with sigma_min = 0 (Lipman et al. 2023): velocity
  u = eps - x0, prior N(0, I) at t = 1, sigma(t) = t / (1 - t)."""

  ends_clean = True

  def marginal(self, t):
    t = jnp.asarray(t, jnp.float32)
    return 1.0 - t, t

  def marginal_derivative(self, t):
    t = jnp.asarray(t, jnp.float32)
    return -jnp.ones_like(t), jnp.ones_like(t)

  t_min = property(lambda self: 0.0)
  t_max = property(lambda self: 1.0)
  prior_std = property(lambda self: 1.0)

  def time_of_sigma(self, sigma):
    sigma = jnp.asarray(sigma, jnp.float32)
    return sigma / (1.0 + sigma)

  def sigma_range(self):
    raise ValueError("the linear path reaches sigma = t / (1 - t) = inf at its prior (t = 1): "
                     "the Karras sigma-space samplers (euler, heun, edm) need a finite "
                     "sigma_max; sample it with ode_euler, ode_heun or ode_midpoint, which "
                     "integrate in t")


# Processes by name: what `config.flow_matching.process` selects (their default parameters).
PROCESSES: dict[str, type[Process]] = {"linear": Linear, "vp": VP, "ve": VE, "edm": EDM}


def process_by_name(name: str) -> Process:
  """The process `name` of `PROCESSES` with its default parameters."""
  if name not in PROCESSES:
    raise ValueError(f"unknown process {name!r}; choose one of {sorted(PROCESSES)}")
  return PROCESSES[name]()
