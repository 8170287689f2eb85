"""Latent consistency models (Luo et al. 2023), `config.method = "diffusion.lcm"`: consistency
distillation of a class-conditional latent diffusion model (`diffusion.ldm`) in its latent
space, from the classifier-free guided teacher, into a student that takes the guidance scale w
as an input.

**Teacher.** A trained `diffusion.ldm` run (label conditioning), rebuilt from its run record and
loaded with two ``init_from`` loads of the same workdir: its EMA network (label tokens and
U-Net) into ``state.frozen["teacher"]`` and its frozen first stage (source 'frozen', subtree
'autoencoder') into ``state.frozen["autoencoder"]``; its recorded latent scale factor s goes
into ``state.model_state["scale_factor"]``. Training runs on the teacher's latents
z0 = s E(x), decoding on its decoder.

**Skipping-step grid** (LCM Sec. 4.3). With T teacher timesteps and skip k,

    tau_n = (n + 1) k - 1,   n = 0..N-1,   N = floor(T / k)

(k = 20 on T = 1000: 19, 39, ..., 999, the 50-step DDIM grid LCM distils).

**Guided teacher step.** eps_w(z, t, y) = eps(z, t, null) + w (eps(z, t, y) - eps(z, t, null))
(jgen's CFG convention, `jgen.diffusion.guidance`; LCM writes omega = w - 1), then one DDIM
step from t_hi = tau_n to t_lo = max(tau_n - k, 0):

    x0_hat = (z - sigma_hi eps_w) / alpha_hi,    z_lo = alpha_lo x0_hat + sigma_lo eps_w,

alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t) (`guided_ddim_step`).

**Consistency function.** The student network is the teacher's with an embedding of w added to
its timestep embedding (the U-Net's ``embedding`` condition: ``timestep_embedding(1000 w)``
through a dense layer initialized to zero, so the student starts as the teacher's conditional
network at every w, and starts from the teacher's weights):

    f(z, t; w, y) = c_skip(t) z + c_out(t) x0_theta(z, t; w, y),
    c_skip(t) = sd^2 / ((a t)^2 + sd^2),   c_out(t) = a t / sqrt((a t)^2 + sd^2),

sd = 0.5 and a = 10 (LCM's timestep scaling), x0_theta the network's x0 (converted from its
prediction kind, the teacher's). f(z, 0) = z exactly: c_skip(0) = 1, c_out(0) = 0.

**Loss** (LCM Alg. 1). n ~ U{0..N-1}, w ~ U[w_min, w_max], z_hi = alpha_hi z0 + sigma_hi eps,

    L = E d(f_theta(z_hi, t_hi; w, y), sg f_theta-(z_lo, t_lo; w, y)),

theta- the 'target' EMA of theta (decay mu = 0.95, LCM's), beside the sampling EMA 'ema'; the
online and target networks share the step's dropout key (as `jgen.diffusion.consistency`).
d: 'l2' (mean squared, LCM's default) or 'pseudo_huber' (`consistency.pseudo_huber`).

**Weighting** (the lambda(t_n) of Song et al. 2023, Eq. 7). ``lcm.weighting = "one"`` is LCM's
lambda = 1. ``"abar"`` weights each example by abar_{t_hi}: an x0 error at t is sigma_t / alpha_t
times the network's eps error, so under lambda = 1 the top of the grid dominates the loss and,
after clipping, the gradient (1 / alpha_999 = 158 on the DDPM linear betas, against 15 on
Stable Diffusion's scaled-linear betas that LCM distils); abar_t makes that term sigma_t^2 times
the squared eps error and leaves the low levels, whose targets carry the boundary condition
up the grid, at weight ~1.

**Sampling** (LCM Alg. 3). K timesteps taken every floor(N / K)-th from the top of the grid
(`lcm_timesteps`; K = 4, k = 20: 999, 759, 519, 279, as LCM's scheduler), z ~ N(0, I); at
each: x0 = f(z, t; w, y), then z = alpha_next x0 + sigma_next eps' (fresh eps') toward the
next; the last x0 is decoded by the teacher's decoder. w = ``sample.guidance_scale``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jgen.diffusion import ddpm as ddpm_lib
from jgen.diffusion import ldm as ldm_lib
from jgen.diffusion.consistency import l2, pseudo_huber
from jgen.diffusion.guidance import cfg_eps_fn
from jgen.diffusion.parameterization import alpha_sigma, to_x0_fn
from jgen.nn.conditioning import null_conditions
from jgen.nn.layers import timestep_embedding
from jgen.ops.schedules import Schedule, q_sample
from jgen.train import init_from as init_from_lib
from jgen.train import rules as rules_lib
from jgen.train import run_record
from jgen.train.method import load_method
from jgen.train.optim import make_optimizer
from jgen.train.state import EmaSpec, TrainState

__all__ = ["LatentConsistency", "guided_ddim_step", "lcm_boundary", "lcm_sample",
           "lcm_timesteps", "make_method", "skip_grid", "w_embedding"]

log = logging.getLogger(__name__)

TEACHER = "teacher"  # state.frozen key of the teacher network (init_from.into="frozen/teacher")
DISTANCES = ("l2", "pseudo_huber")
WEIGHTINGS = ("one", "abar")  # lambda(t_n): LCM's 1, or abar_t (module docstring)
PyTree = Any
Fn = Callable[[jax.Array, jax.Array], jax.Array]  # (z [B, ...], t int32 [B]) -> [B, ...]


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


# ------------------------------------------------------------------ grid and coefficients


def skip_grid(num_timesteps: int, skip: int) -> np.ndarray:
  """tau_n = (n + 1) k - 1 for n = 0..floor(T / k) - 1 (module docstring), int32.

  Raises:
    ValueError: k outside [1, T].
  """
  if not 1 <= skip <= num_timesteps:
    raise ValueError(f"lcm.skip={skip} must lie in [1, T={num_timesteps}] (LCM's k = 20 on "
                     "T = 1000 gives the 50-step DDIM grid)")
  return (np.arange(1, num_timesteps // skip + 1) * skip - 1).astype(np.int32)


def lcm_timesteps(grid: np.ndarray, steps: int) -> np.ndarray:
  """The K = `steps` sampling timesteps: every floor(N / K)-th grid point from the top.

  Raises:
    ValueError: K outside [1, N].
  """
  grid = np.asarray(grid)
  if not 1 <= steps <= grid.size:
    raise ValueError(f"sample.steps={steps} must lie in [1, {grid.size}] (the grid's "
                     "timesteps; lower lcm.skip for more)")
  return grid[::-1][::grid.size // steps][:steps]


def lcm_boundary(t: jax.Array, *, sigma_data: float = 0.5, timestep_scaling: float = 10.0
                 ) -> tuple[jax.Array, jax.Array]:
  """(c_skip, c_out) at timesteps t (module docstring); (1, 0) exactly at t = 0."""
  scaled = timestep_scaling * jnp.asarray(t, jnp.float32)
  sd2 = sigma_data ** 2
  return sd2 / (scaled ** 2 + sd2), scaled * jax.lax.rsqrt(scaled ** 2 + sd2)


def w_embedding(w: jax.Array, dim: int) -> jax.Array:
  """The student's guidance-scale input: `timestep_embedding(1000 w, dim)`, [B, dim]."""
  return timestep_embedding(1000.0 * jnp.asarray(w, jnp.float32), dim)


# ------------------------------------------------------------------ the pieces


def guided_ddim_step(eps_fn: Fn, schedule: Schedule, z: jax.Array, t_hi: jax.Array,
                     t_lo: jax.Array) -> jax.Array:
  """One deterministic DDIM step of `eps_fn` from t_hi to t_lo (int32 [B]; module docstring)."""
  alpha_hi, sigma_hi = alpha_sigma(schedule, t_hi, z)
  alpha_lo, sigma_lo = alpha_sigma(schedule, t_lo, z)
  eps = eps_fn(z, t_hi)
  x0 = (z - sigma_hi * eps) / alpha_hi
  return alpha_lo * x0 + sigma_lo * eps


def consistency_fn(x0_fn: Fn, *, sigma_data: float, timestep_scaling: float) -> Fn:
  """f(z, t) = c_skip(t) z + c_out(t) x0_fn(z, t)."""

  def f(z, t):
    c_skip, c_out = lcm_boundary(t, sigma_data=sigma_data, timestep_scaling=timestep_scaling)
    return _bcast(c_skip, z) * z + _bcast(c_out, z) * x0_fn(z, t)

  return f


def lcm_sample(f: Fn, schedule: Schedule, rng: jax.Array, shape: Sequence[int],
               timesteps: Sequence[int]) -> jax.Array:
  """Multistep consistency sampling over decreasing `timesteps` (module docstring), one
  `lax.scan`; z_T from `fold_in(rng, 0)`, the noise toward step k + 1 from `fold_in(rng, k + 1)`.
  Returns the last x0."""
  ts = np.asarray(timesteps, np.int32)
  if ts.ndim != 1 or ts.size < 1 or np.any(np.diff(ts) >= 0) or ts[-1] < 0:
    raise ValueError(f"sampling timesteps must be non-negative and decrease, got {list(ts)}")
  n = shape[0]
  nxt = np.concatenate([ts[1:], ts[-1:]])  # the last step's re-noising is never used

  def step(carry, inputs):
    z, _ = carry
    k, t, t_next = inputs
    x0 = f(z, jnp.full((n,), t, jnp.int32))
    alpha, sigma = alpha_sigma(schedule, jnp.full((n,), t_next, jnp.int32), x0)
    noise = jax.random.normal(jax.random.fold_in(rng, k + 1), shape, jnp.float32)
    return (alpha * x0 + sigma * noise, x0), None

  z = jax.random.normal(jax.random.fold_in(rng, 0), shape, jnp.float32)
  xs = (jnp.arange(ts.size), jnp.asarray(ts), jnp.asarray(nxt))
  (_, x0), _ = jax.lax.scan(step, (z, jnp.zeros(shape, jnp.float32)), xs)
  return x0


# ------------------------------------------------------------------ the method


@dataclasses.dataclass(frozen=True, eq=False)
class LatentConsistency:
  """A latent consistency model distilled from a guided latent diffusion teacher.

  Attributes:
    teacher: the teacher method (`ldm.LatentDiffusion`: first stage, latents, decoding, its
      `ConditionalDDPM` with schedule and prediction kind).
    student: the teacher's DDPM with the student network (the w embedding) and this run's
      optimizer and EMA settings.
    teacher_params: the teacher's loaded EMA network (host).
    ae_params: its first stage's parameters (host; the same arrays as the loaded
      ``frozen["autoencoder"]``).
    scale_factor: the teacher's recorded latent scale factor.
    skip: k of the grid.
    w_min, w_max: the training range of w (jgen's CFG convention).
    w_embed_dim: size of the w embedding.
    sigma_data, timestep_scaling: the boundary coefficients' sd and a.
    distance: 'l2' or 'pseudo_huber'; `huber_c` its c (None: 0.00054 sqrt(dim)).
    target_decay: mu of the target EMA.
    weighting: lambda(t_n), 'one' or 'abar' (module docstring).
    sample_steps: K of sampling; `guidance_scale` its w.
  """

  teacher: ldm_lib.LatentDiffusion
  student: ddpm_lib.ConditionalDDPM
  teacher_params: PyTree
  ae_params: PyTree
  scale_factor: float
  skip: int = 20
  w_min: float = 1.0
  w_max: float = 5.0
  w_embed_dim: int = 64
  sigma_data: float = 0.5
  timestep_scaling: float = 10.0
  distance: str = "l2"
  huber_c: float | None = None
  target_decay: float = 0.95
  weighting: str = "one"
  sample_steps: int = 4
  guidance_scale: float = 3.0

  def __post_init__(self):
    if self.distance not in DISTANCES:
      raise ValueError(f"unknown lcm.distance={self.distance!r}; choose one of {DISTANCES}")
    if self.weighting not in WEIGHTINGS:
      raise ValueError(f"unknown lcm.weighting={self.weighting!r}; choose one of {WEIGHTINGS}")
    if not self.w_min <= self.w_max:
      raise ValueError(f"need lcm.w_min <= lcm.w_max, got {self.w_min}, {self.w_max}")
    if not 0.0 <= self.target_decay < 1.0:
      raise ValueError(f"lcm.target_decay must lie in [0, 1), got {self.target_decay}")
    lcm_timesteps(self.grid, self.sample_steps)  # raises on a bad K

  @property
  def num_classes(self) -> int:
    return self.teacher.num_classes

  @property
  def schedule(self) -> Schedule:
    return self.teacher.ddpm.schedule

  @property
  def grid(self) -> np.ndarray:
    return skip_grid(self.schedule.num_timesteps, self.skip)

  def conditions(self, labels: jax.Array, w: jax.Array) -> dict[str, jax.Array]:
    """The student's conditions: the label and the embedding of w."""
    return {"label": labels, "embedding": w_embedding(w, self.w_embed_dim)}

  def f(self, params, conditions: dict[str, jax.Array], *, train: bool = False,
        dropout_rng: jax.Array | None = None) -> Fn:
    """The student's consistency function for `conditions`."""
    model_fn = self.student.model_fn(params, conditions, train=train, dropout_rng=dropout_rng)
    return consistency_fn(to_x0_fn(model_fn, self.schedule, self.student.prediction),
                          sigma_data=self.sigma_data, timestep_scaling=self.timestep_scaling)

  def teacher_eps_fn(self, teacher_params, labels: jax.Array, w: jax.Array) -> Fn:
    """The teacher's guided eps_w at a per-example w [B]."""
    ddpm = self.teacher.ddpm

    def eps_cond_fn(z, t, c):
      return ddpm.eps_fn(teacher_params, c, train=False)(z, t)
    cond = {"label": labels}
    w = jnp.reshape(w, (-1,) + (1,) * len(self.teacher.latent_shape))
    return cfg_eps_fn(eps_cond_fn, cond, null_conditions(cond, num_classes=self.num_classes), w)

  def distance_fn(self, a: jax.Array, b: jax.Array) -> jax.Array:
    return l2(a, b) if self.distance == "l2" else pseudo_huber(a, b, self.huber_c)

  # ------------------------------------------------------------------ the method

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    """The student from the teacher's weights (its w projection zero), the frozen teacher and
    first stage, the teacher's scale factor, the 'ema' and 'target' EMAs."""
    z = jnp.zeros((1, *self.teacher.latent_shape), jnp.float32)
    cond = self.conditions(jnp.zeros((1,), jnp.int32), jnp.ones((1,), jnp.float32))
    params = self.student.model.init(rng, z, jnp.zeros((1,), jnp.int32), cond, train=False)
    teacher = jax.tree.map(jnp.asarray, self.teacher_params)
    params = rules_lib.merge(params, jax.tree.map(jnp.copy, teacher))
    emas = [EmaSpec("ema", self.student.ema_decay, self.student.ema_warmup),
            EmaSpec("target", self.target_decay, False)]
    return TrainState.create(
        params=params, tx=self.student.tx, rng=jax.random.fold_in(rng, 1), emas=emas,
        model_state={"scale_factor": jnp.asarray(self.scale_factor, jnp.float32)},
        frozen={TEACHER: teacher, ldm_lib.FROZEN: jax.tree.map(jnp.asarray, self.ae_params)})

  def loss_fn(self, params, target_params, frozen: PyTree, model_state: PyTree,
              batch: dict[str, jax.Array], rng: jax.Array, *, train: bool = True
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The LCM loss of `params` on a batch of images and labels (module docstring)."""
    z0 = self.teacher.latents(frozen, model_state, batch["image"])
    labels = self.teacher._labels(batch)  # pylint: disable=protected-access
    n_rng, w_rng, eps_rng, dropout_rng = jax.random.split(rng, 4)
    b = z0.shape[0]
    grid = jnp.asarray(self.grid)
    t_hi = grid[jax.random.randint(n_rng, (b,), 0, grid.shape[0])]
    t_lo = jnp.maximum(t_hi - self.skip, 0)
    w = jax.random.uniform(w_rng, (b,), jnp.float32, self.w_min, self.w_max)
    z_hi = q_sample(self.schedule, z0, t_hi, jax.random.normal(eps_rng, z0.shape, z0.dtype))
    z_lo = jax.lax.stop_gradient(guided_ddim_step(
        self.teacher_eps_fn(frozen[TEACHER], labels, w), self.schedule, z_hi, t_hi, t_lo))
    cond = self.conditions(labels, w)
    online = self.f(params, cond, train=train, dropout_rng=dropout_rng)(z_hi, t_hi)
    target = jax.lax.stop_gradient(
        self.f(target_params, cond, train=train, dropout_rng=dropout_rng)(z_lo, t_lo))
    weight = 1.0 if self.weighting == "one" else self.schedule.alphas_cumprod[t_hi]
    loss = jnp.mean(weight * self.distance_fn(online, target))
    return loss, {"loss": loss, "w": jnp.mean(w), "t": jnp.mean(t_hi.astype(jnp.float32))}

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return state.gradient_step(self.loss_fn, state.averaged("target"), state.frozen,
                               state.model_state, batch, rng)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """The loss of the sampling EMA (dropout off) on a held-out batch."""
    _, metrics = self.loss_fn(state.ema_params, state.averaged("target"), state.frozen,
                              state.model_state, batch, rng, train=False)
    return metrics

  def sample_latents(self, params, rng: jax.Array, labels: jax.Array) -> jax.Array:
    """Scaled latents [n, ...] for `labels` [n]: `lcm_sample` over `sample_steps` at w =
    `guidance_scale`."""
    n = labels.shape[0]
    f = self.f(params, self.conditions(labels, jnp.full((n,), self.guidance_scale)))
    return lcm_sample(f, self.schedule, rng, (n, *self.teacher.latent_shape),
                      lcm_timesteps(self.grid, self.sample_steps))

  def sample_conditional(self, state: TrainState, rng: jax.Array,
                         conditions: dict[str, jax.Array], n: int) -> jax.Array:
    """`n` images for ``conditions = {"label": int32 [n]}``, decoded by the frozen decoder."""
    labels = jnp.asarray(conditions["label"], jnp.int32)
    if labels.shape != (n,):
      raise ValueError(f"label has shape {labels.shape}, expected ({n},)")
    z = self.sample_latents(state.ema_params, rng, labels)
    return self.teacher.decode_latents(state.frozen, state.model_state, z)

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images, every class in turn (0, 1, ..., K-1, 0, ...)."""
    labels = jnp.asarray(np.arange(n) % self.num_classes, jnp.int32)
    return self.sample_conditional(state, rng, {"label": labels}, n)

  @property
  def sample_tag(self) -> str:
    return f"lcm{self.sample_steps}_w{self.guidance_scale:g}"


# ------------------------------------------------------------------ config boundary


def _load_teacher(config: Any) -> tuple[ldm_lib.LatentDiffusion, PyTree, PyTree, float, str]:
  """(teacher method, its EMA network, its frozen first stage, its scale factor, workdir) of
  the two ``init_from`` loads, checked before anything compiles."""
  example = " (experiments/distill/lcm_digits.py sets both)"
  spec = init_from_lib.frozen_load(
      config, TEACHER, hint=example,
      needs="diffusion.lcm distils a trained class-conditional diffusion.ldm run: set "
            "--config.init_from.workdir=<its workdir>")
  ae_spec = init_from_lib.frozen_load(
      config, ldm_lib.FROZEN, hint=example,
      needs="diffusion.lcm decodes with the teacher's frozen first stage: add a load of the "
            "teacher run's source='frozen', subtree='autoencoder'")
  if (ae_spec.workdir, ae_spec.source, ae_spec.subtree) != (spec.workdir, "frozen",
                                                             "autoencoder"):
    raise ValueError(
        f"the first-stage load ({ae_spec.name}: workdir={ae_spec.workdir!r}, source="
        f"{ae_spec.source!r}, subtree={ae_spec.subtree!r}) must read the teacher run's own "
        f"first stage: workdir={spec.workdir!r}, source='frozen', subtree='autoencoder'")
  if spec.subtree:
    raise ValueError(f"init_from.subtree={spec.subtree!r}: the teacher is a whole diffusion.ldm"
                     " network; set --config.init_from.subtree=''")
  try:
    tconfig = run_record.latest_config(spec.workdir)
  except run_record.RunRecordError as e:
    raise ValueError(f"init_from.workdir={spec.workdir!r}: {e}") from e
  teacher = load_method(tconfig)
  if type(teacher) is not ldm_lib.LatentDiffusion:  # pylint: disable=unidiomatic-typecheck
    raise ValueError(f"the teacher {spec.workdir} is a {tconfig.get('method')!r} run "
                     f"({type(teacher).__name__}); diffusion.lcm distils a label-conditional "
                     "diffusion.ldm run (experiments/ldm/digits.py)")
  params, step = init_from_lib.load(spec)
  ae_params, _ = init_from_lib.load(dataclasses.replace(ae_spec, step=step))
  scale, _ = init_from_lib.load(dataclasses.replace(spec, step=step, source="model_state",
                                                    subtree="scale_factor"))
  z = jax.ShapeDtypeStruct((1, *teacher.latent_shape), jnp.float32)
  abstract = jax.eval_shape(
      lambda r, x: teacher.ddpm.init(r, {"image": x}).params, jax.random.key(0), z)
  init_from_lib.raise_problems(
      init_from_lib.fit_problems(abstract, params, where=f"frozen/{TEACHER}",
                                 what=spec.source, require_all=True),
      what=f"the teacher {spec.workdir} step {step}")
  log.info("LCM teacher %s step %d: latents %s, scale factor %.6g", spec.workdir, step,
           teacher.latent_shape, float(scale))
  return teacher, params, ae_params, float(scale), spec.workdir


def make_method(config: Any) -> LatentConsistency:
  """Translates `config.lcm`, `optim`, `train`, `sample` and the teacher run of `init_from`
  into a `LatentConsistency`; the architecture, schedule and prediction kind are the
  teacher's.

  Raises:
    ValueError: a missing or unfit teacher, data that differ from its, bad options.
  """
  teacher, tparams, ae_params, scale, workdir = _load_teacher(config)
  image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
  if tuple(teacher.image_shape) != image_shape:
    raise ValueError(f"data is {image_shape}, the teacher {workdir} was trained on "
                     f"{teacher.image_shape}: set data.image_size/channels to its")
  lc = config.lcm
  dim = int(lc.w_embed_dim)
  model = teacher.ddpm.model
  student_model = dataclasses.replace(
      model, unet=dataclasses.replace(model.unet, embedding_dim=dim, embedding_init_scale=0.0))
  student = dataclasses.replace(
      teacher.ddpm, model=student_model,
      tx=make_optimizer(config.optim, total_steps=config.train.num_steps),
      ema_decay=float(config.train.ema_decay), ema_warmup=bool(config.train.ema_warmup))
  huber_c = lc.huber_c
  w = float(config.sample.guidance_scale)
  if not float(lc.w_min) <= w <= float(lc.w_max):
    log.warning("sample.guidance_scale=%g lies outside the trained range [%g, %g] of w", w,
                float(lc.w_min), float(lc.w_max))
  return LatentConsistency(
      teacher=teacher, student=student, teacher_params=tparams, ae_params=ae_params,
      scale_factor=scale, skip=int(lc.skip), w_min=float(lc.w_min), w_max=float(lc.w_max),
      w_embed_dim=dim, sigma_data=float(lc.sigma_data),
      timestep_scaling=float(lc.timestep_scaling), distance=str(lc.distance),
      huber_c=None if huber_c is None else float(huber_c),
      target_decay=float(lc.target_decay), weighting=str(lc.weighting),
      sample_steps=int(config.sample.steps),
      guidance_scale=w)
