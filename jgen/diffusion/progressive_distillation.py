"""Progressive distillation (Salimans & Ho 2022): a student learns two DDIM steps of its teacher
in one, and the steps halve N -> N/2 -> ... inside one run. `config.method =
"diffusion.progressive_distillation"`.

The teacher is a trained `diffusion.ddpm` run loaded frozen with ``init_from`` (its EMA
parameters, ``into="frozen/teacher"``); its architecture, noise schedule and prediction come from
its run record (`jgen.train.run_record.latest_config`), and the checkpoint's shapes are checked
against that architecture before anything compiles. The student has the teacher's U-Net (with
``config.model.dropout``: the paper's students use none) and starts from the teacher's weights.

Time grid (discrete teacher, continuous levels). The teacher was trained on the integer
timesteps 0..T-1 of its schedule. A student with N steps lives on the levels u_i = i / N,
i = 0..N, mapped to the fractional timestep tau(u) = u T - 1 ("trailing" spacing: u = 1 is the
last timestep T - 1, and u = 0 is the clean data itself, alpha = 1, sigma = 0). alpha and sigma
at fractional tau are the schedule's log-sigma interpolation (`jgen.diffusion.alpha_sigma`), and
the U-Net's sinusoidal time embedding takes the float tau. The grids nest: the 2N-step grid
holds every point of the N-step grid plus the midpoints, for any N, so every halving is exact
(the teacher's finest step 1 / (2 N_0) must span at least one timestep: 2 N_0 <= T).

Target (the paper's Algorithm 2). With x ~ data, i ~ U{1..N}, t = i / N, t' = t - 1/(2N),
t'' = t - 1/N, z_t = alpha_t x + sigma_t eps, and the teacher's x-prediction x_eta:

    z_t'  = alpha_t'  x_eta(z_t)  + (sigma_t'  / sigma_t ) (z_t  - alpha_t  x_eta(z_t))
    z_t'' = alpha_t'' x_eta(z_t') + (sigma_t'' / sigma_t') (z_t' - alpha_t' x_eta(z_t'))
    x~    = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)

i.e. x~ is the x-prediction that makes ONE student DDIM step t -> t'' land where the teacher's two
steps land (at i = 1, t'' = 0 and x~ = z_t'' = the teacher's second x-prediction). The teacher's
steps are not clipped (``diffusion.clip_teacher``, False as in google-research's
diffusion_distillation: clipping would make x~ a target no unclipped step reproduces).

Loss. The student predicts v (or x0; ``diffusion.prediction``), converted to x_theta(z_t) =
alpha_t z_t - sigma_t v_theta, and is trained on the weighted x-error

    L = w(t) || x~ - x_theta(z_t) ||^2,   w = max(SNR_t, 1)   ('truncated_snr', the default)
                                       or w = SNR_t + 1     ('snr_plus_one' = the v-MSE)

Truncated SNR is what the paper's distillation configs use (google-research's
``mean_loss_weight_type='snr_trunc'``, there written max(x_mse, eps_mse)): at low noise it is
the eps-MSE (w = SNR), at high noise the x-MSE (w = 1), where SNR + 1 puts the same weight 1 on
the x error at SNR -> 0 and differs only in the middle. A teacher trained with eps prediction is
converted for the targets (`to_x0_fn`), but the student does not take eps prediction: at few
steps the first step starts at alpha ~ 0, where x = (z - sigma eps) / alpha multiplies the
network's error by sigma / alpha (~160 at T - 1 of the linear schedule; the paper's Sec. 4). A
student of another prediction than its teacher starts from the teacher's weights with its output
re-read as the new quantity (logged as a warning): train the teacher with v instead.

Rounds. Round r (0-based) trains a student of N_r = N_0 / 2^r steps for ``steps_per_round``
updates; the round follows from the step (`RoundSchedule`). At the first update of each round
(``state.step % steps_per_round == 0``, a `lax.cond` inside the one compiled step) the round's
teacher ``state.model_state["teacher"]`` becomes the previous round's student (its sampling EMA,
which with ``train.ema_decay = 0`` -- the paper's -- is the student itself), or the frozen
original teacher in round 0; the student restarts from that teacher, and its optimizer state and
EMAs are reset (the paper trains each halving from a fresh optimizer with the learning rate
annealed over the round: the optimizer's schedule spans one round). Everything a round needs is
in the checkpoint, so a resume mid-round or across a round boundary is exact.

Sampling: deterministic DDIM with the student on its own N-step grid (`student_ddim_sample`,
one loop over the steps, x0 clipped with ``sample.clip_denoised``). ``sample.steps = 0`` samples
with the N of the checkpoint's last round (read from the state's step inside the jitted sampler);
``sample.steps = K > 0`` samples with K steps and, when K differs from that N, logs a warning
(not an error: a student sampled off its grid is a legitimate experiment, just not the distilled
sampler).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp

from jgen.diffusion import ddpm as ddpm_lib
from jgen.diffusion.parameterization import PREDICTIONS, alpha_sigma, predict_x0, to_x0_fn
from jgen.diffusion.samplers import initial_noise
from jgen.nn.dtypes import compute_dtype
from jgen.nn.unet import UNet
from jgen.ops.schedules import Schedule
from jgen.train import init_from as init_from_lib
from jgen.train import run_record
from jgen.train.method import load_method
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState

__all__ = ["FROZEN", "TEACHER", "WEIGHTINGS", "ProgressiveDistillation", "RoundSchedule",
           "distillation_loss", "distillation_target", "level_alpha_sigma", "level_timestep",
           "load_teacher", "make_method", "student_ddim_sample"]

log = logging.getLogger(__name__)

FROZEN = "teacher"   # state.frozen key of the original teacher (init_from.into="frozen/teacher")
TEACHER = "teacher"  # state.model_state key of the current round's teacher
WEIGHTINGS = ("truncated_snr", "snr_plus_one")
STUDENT_PREDICTIONS = ("v", "x0")

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]
PyTree = Any


# ------------------------------------------------------------------ the time grid


def level_timestep(schedule: Schedule, u: jax.Array) -> jax.Array:
  """The fractional timestep tau(u) = u T - 1 of levels u in (0, 1], float32 (clamped at 0)."""
  u = jnp.asarray(u, jnp.float32)
  return jnp.maximum(u * schedule.num_timesteps - 1.0, 0.0)


def level_alpha_sigma(schedule: Schedule, u: jax.Array, x: jax.Array | None = None
                      ) -> tuple[jax.Array, jax.Array]:
  """alpha and sigma at levels u [B] in [0, 1]: the schedule's at tau(u), and (1, 0) at u = 0.

  With `x` [B, ...] the results are shaped [B, 1, ..., 1] to broadcast against it.
  """
  u = jnp.asarray(u, jnp.float32)
  chex.assert_rank(u, 1)
  alpha, sigma = alpha_sigma(schedule, level_timestep(schedule, u))
  clean = u <= 0.0
  alpha, sigma = jnp.where(clean, 1.0, alpha), jnp.where(clean, 0.0, sigma)
  if x is not None:
    shape = (u.shape[0],) + (1,) * (x.ndim - 1)
    alpha, sigma = alpha.reshape(shape), sigma.reshape(shape)
  return alpha, sigma


def _ddim_step(x0: jax.Array, z: jax.Array, alpha_t, sigma_t, alpha_s, sigma_s) -> jax.Array:
  """DDIM from level t to s < t: z_s = alpha_s x0 + (sigma_s / sigma_t)(z_t - alpha_t x0)."""
  return alpha_s * x0 + (sigma_s / sigma_t) * (z - alpha_t * x0)


# ------------------------------------------------------------------ target and loss


def distillation_target(teacher_x0_fn: ModelFn, schedule: Schedule, z: jax.Array, u: jax.Array,
                        num_steps: jax.Array | int, *, clip: bool = False) -> jax.Array:
  """The x~ of Algorithm 2: the x-prediction whose one DDIM step u -> u - 1/N equals the
  teacher's two steps u -> u - 1/(2N) -> u - 1/N (module docstring).

  Args:
    teacher_x0_fn: the teacher's x-prediction, (z [B, ...], tau [B] float) -> x0.
    schedule: the teacher's noise process.
    z: z_u, shape [B, ...].
    u: the levels i / N of `z`, shape [B], in (0, 1].
    num_steps: the student's N (a Python int or a traced scalar).
    clip: clip the teacher's x-predictions to [-1, 1].

  Returns:
    x~ with the shape of `z` (no gradient flows into it).
  """
  n = jnp.asarray(num_steps, jnp.float32)
  u = jnp.asarray(u, jnp.float32)
  u_mid, u_end = u - 0.5 / n, u - 1.0 / n
  a_t, s_t = level_alpha_sigma(schedule, u, z)
  a_m, s_m = level_alpha_sigma(schedule, u_mid, z)
  a_s, s_s = level_alpha_sigma(schedule, u_end, z)

  def x0_at(x, level):
    x0 = teacher_x0_fn(x, level_timestep(schedule, level))
    return jnp.clip(x0, -1.0, 1.0) if clip else x0

  z_mid = _ddim_step(x0_at(z, u), z, a_t, s_t, a_m, s_m)
  z_end = _ddim_step(x0_at(z_mid, u_mid), z_mid, a_m, s_m, a_s, s_s)
  ratio = s_s / s_t
  return jax.lax.stop_gradient((z_end - ratio * z) / (a_s - ratio * a_t))


def loss_weight(schedule: Schedule, u: jax.Array, weighting: str) -> jax.Array:
  """w(u) on the x-MSE: max(SNR, 1) ('truncated_snr') or SNR + 1 ('snr_plus_one'), shape [B]."""
  if weighting not in WEIGHTINGS:
    raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")
  alpha, sigma = level_alpha_sigma(schedule, u)
  snr = jnp.square(alpha / sigma)
  return jnp.maximum(snr, 1.0) if weighting == "truncated_snr" else snr + 1.0


def distillation_loss(student_fn: ModelFn, teacher_x0_fn: ModelFn, schedule: Schedule,
                      x0: jax.Array, rng: jax.Array, num_steps: jax.Array | int, *,
                      prediction: str = "v", weighting: str = "truncated_snr",
                      clip_teacher: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The progressive-distillation loss of one batch (module docstring).

  `rng` is split as `level_rng, noise_rng = split(rng)`: i ~ U{1..N} from the first, eps from the
  second.

  Args:
    student_fn: the student, (z, tau [B] float) -> its prediction of kind `prediction`.
    teacher_x0_fn: the teacher's x-prediction, (z, tau) -> x0.
    schedule: the noise process.
    x0: clean data [B, ...].
    rng: PRNG key.
    num_steps: the student's N (int or traced scalar).
    prediction: what the student predicts, 'v' or 'x0'.
    weighting: 'truncated_snr' or 'snr_plus_one'.
    clip_teacher: clip the teacher's x-predictions in the target.

  Returns:
    (loss, metrics): the batch mean of w(u) * mean-over-pixels (x~ - x_theta)^2, and metrics
    with the loss and the unweighted x-MSE.
  """
  if prediction not in STUDENT_PREDICTIONS:
    raise ValueError(f"student prediction {prediction!r}: choose one of {STUDENT_PREDICTIONS}")
  batch = x0.shape[0]
  level_rng, noise_rng = jax.random.split(rng)
  n = jnp.asarray(num_steps, jnp.int32)
  i = jax.random.randint(level_rng, (batch,), 1, n + 1, dtype=jnp.int32)
  u = i.astype(jnp.float32) / n.astype(jnp.float32)
  eps = jax.random.normal(noise_rng, x0.shape, x0.dtype)
  alpha, sigma = level_alpha_sigma(schedule, u, x0)
  z = alpha * x0 + sigma * eps
  target = distillation_target(teacher_x0_fn, schedule, z, u, n, clip=clip_teacher)
  tau = level_timestep(schedule, u)
  x_hat = predict_x0(schedule, z, tau, student_fn(z, tau), prediction=prediction)
  x_mse = jnp.mean(jnp.square(x_hat - target).reshape(batch, -1), axis=1)
  loss = jnp.mean(loss_weight(schedule, u, weighting) * x_mse)
  return loss, {"loss": loss, "x_mse": jnp.mean(x_mse)}


# ------------------------------------------------------------------ sampler


def student_ddim_sample(x0_fn: ModelFn, schedule: Schedule, rng: jax.Array, shape, *,
                        steps: jax.Array | int, clip_denoised: bool = True,
                        x_T: jax.Array | None = None) -> jax.Array:
  """Deterministic DDIM on the `steps`-step level grid u_i = i / steps (module docstring).

  Step k (k = 0..steps-1) goes from u = (steps - k) / steps to (steps - k - 1) / steps; the last
  returns the x-prediction itself (alpha = 1, sigma = 0). One `lax.fori_loop`: a scan for a
  Python-int `steps`, a while loop for a traced one (the distilled N read from the state).
  x_T ~ N(0, I) from `split(rng)[0]` unless given.

  Args:
    x0_fn: (z [B, ...], tau [B] float) -> x0.
    schedule: the noise process.
    rng: PRNG key.
    shape: static [B, ...].
    steps: number of model evaluations, >= 1.
    clip_denoised: clip each x-prediction to [-1, 1].
    x_T: optional starting noise.

  Returns:
    The samples, shape `shape`.
  """
  if isinstance(steps, int) and steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  x_T, _, shape = initial_noise(rng, shape, x_T)
  n = jnp.asarray(steps, jnp.float32)
  ones = jnp.ones((shape[0],), jnp.float32)

  def body(k, z):
    u_t = ones * ((n - k) / n)
    u_s = ones * ((n - k - 1) / n)
    x0 = x0_fn(z, level_timestep(schedule, u_t))
    x0 = jnp.clip(x0, -1.0, 1.0) if clip_denoised else x0
    a_t, s_t = level_alpha_sigma(schedule, u_t, z)
    a_s, s_s = level_alpha_sigma(schedule, u_s, z)
    return _ddim_step(x0, z, a_t, s_t, a_s, s_s)

  return jax.lax.fori_loop(0, steps, body, x_T)


# ------------------------------------------------------------------ rounds


@dataclasses.dataclass(frozen=True)
class RoundSchedule:
  """Rounds of halving: round r = step // steps_per_round trains N_r = start_steps / 2^r steps.

  Attributes:
    start_steps: N_0, the first student's steps (its teacher samples with 2 N_0).
    final_steps: the last round's N (start_steps / final_steps a power of two).
    steps_per_round: updates per round.
  """

  start_steps: int
  final_steps: int
  steps_per_round: int

  def __post_init__(self):
    s, f = self.start_steps, self.final_steps
    if not (isinstance(s, int) and isinstance(f, int) and 1 <= f <= s):
      raise ValueError(f"need integers 1 <= final_steps <= start_steps, got final_steps={f}, "
                       f"start_steps={s}")
    ratio = s // f
    if s % f or ratio & (ratio - 1):
      raise ValueError(f"start_steps / final_steps = {s}/{f} must be a power of two (each round"
                       " halves the steps): e.g. start_steps=32, final_steps=4")
    if self.steps_per_round < 1:
      raise ValueError(f"steps_per_round must be >= 1, got {self.steps_per_round}")

  @property
  def num_rounds(self) -> int:
    return int(math.log2(self.start_steps // self.final_steps)) + 1

  @property
  def total_steps(self) -> int:
    """Updates of all rounds."""
    return self.num_rounds * self.steps_per_round

  def round_of(self, step):
    """The round that the update taking the state from `step` to `step + 1` trains."""
    if isinstance(step, int):
      return min(step // self.steps_per_round, self.num_rounds - 1)
    return jnp.minimum(step // self.steps_per_round, self.num_rounds - 1)

  def steps_of_round(self, r):
    """N_r = start_steps / 2^r (int for an int r, else int32)."""
    if isinstance(r, int):
      return self.start_steps >> r
    return jnp.right_shift(jnp.int32(self.start_steps), jnp.asarray(r, jnp.int32))

  def distilled_steps(self, step):
    """The N of a state after `step` updates: that of the round of its last update."""
    if isinstance(step, int):
      return self.steps_of_round(self.round_of(max(step - 1, 0)))
    return self.steps_of_round(self.round_of(jnp.maximum(step - 1, 0)))


def _warn_if_off_grid(step, distilled, asked) -> None:
  if int(distilled) != int(asked):
    log.warning("sampling the student of step %d, distilled to %d steps, with sample.steps=%d: "
                "not the distilled sampler (set sample.steps=%d, or 0 for the distilled N)",
                int(step), int(distilled), int(asked), int(distilled))


# ------------------------------------------------------------------ the method


@dataclasses.dataclass(frozen=True, eq=False)
class ProgressiveDistillation:
  """The method of the loop (module docstring).

  Attributes:
    model: the student's U-Net (the teacher's architecture).
    schedule: the teacher's noise process.
    tx: the optimizer of one round (its schedule spans `rounds.steps_per_round`).
    image_shape: (H, W, C).
    rounds: the halving schedule.
    teacher_prediction: what the teacher predicts ('eps', 'x0' or 'v').
    prediction: what the student predicts ('v' or 'x0').
    weighting: 'truncated_snr' or 'snr_plus_one'.
    clip_teacher: clip the teacher's x-predictions in the targets.
    ema_decay: the student's sampling EMA (None: none, the paper's; the teacher of the next
      round is then the student itself).
    ema_warmup: ramp the EMA decay.
    sample_steps: sampler steps (0: the distilled N of the state).
    clip_denoised: clip x-predictions while sampling.
    teacher_workdir: the teacher's run (messages).
  """

  model: UNet
  schedule: Schedule
  tx: Any
  image_shape: tuple[int, int, int]
  rounds: RoundSchedule
  teacher_prediction: str = "v"
  prediction: str = "v"
  weighting: str = "truncated_snr"
  clip_teacher: bool = False
  ema_decay: float | None = None
  ema_warmup: bool = False
  sample_steps: int = 0
  clip_denoised: bool = True
  teacher_workdir: str = ""

  def __post_init__(self):
    if self.prediction not in STUDENT_PREDICTIONS:
      raise ValueError(
          f"diffusion.prediction={self.prediction!r}: the student predicts 'v' or 'x0'; eps "
          "prediction fails at few steps (x = (z - sigma eps) / alpha amplifies its error by "
          "sigma / alpha at the first step, Salimans & Ho 2022 Sec. 4)")
    if self.teacher_prediction not in PREDICTIONS:
      raise ValueError(f"unknown teacher prediction {self.teacher_prediction!r}")
    if self.weighting not in WEIGHTINGS:
      raise ValueError(f"diffusion.weighting={self.weighting!r}; choose one of {WEIGHTINGS}")
    if 2 * self.rounds.start_steps > self.schedule.num_timesteps:
      raise ValueError(
          f"diffusion.start_steps={self.rounds.start_steps}: the first teacher samples with "
          f"2 * start_steps = {2 * self.rounds.start_steps} steps, more than the teacher's "
          f"{self.schedule.num_timesteps} timesteps; set start_steps <= "
          f"{self.schedule.num_timesteps // 2}")
    if self.sample_steps < 0:
      raise ValueError(f"sample.steps must be >= 0 (0: the distilled N), got {self.sample_steps}")

  # ------------------------------------------------------------------ networks

  def model_fn(self, params, *, train: bool = False,
               dropout_rng: jax.Array | None = None) -> ModelFn:
    """The network's raw output as `fn(z, tau)`."""
    rngs = {"dropout": dropout_rng} if train else None
    return lambda z, t: self.model.apply(params, z, t, None, train=train, rngs=rngs)

  def teacher_x0_fn(self, teacher_params) -> ModelFn:
    """The teacher's x-prediction (converted from its parameterization; dropout off)."""
    return to_x0_fn(self.model_fn(teacher_params), self.schedule, self.teacher_prediction)

  # ------------------------------------------------------------------ the method

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    """Random student parameters (replaced by the teacher's at the first update); the frozen
    teacher's structure (the loop's `init_from` fills it); a round-teacher slot in model_state."""
    params_rng, state_rng = jax.random.split(rng)
    x = batch["image"][:1]
    params = self.model.init(params_rng, x, jnp.zeros((1,), jnp.float32), None, train=False)
    return TrainState.create(params=params, tx=self.tx, rng=state_rng,
                             ema_decay=self.ema_decay, ema_warmup=self.ema_warmup,
                             model_state={TEACHER: params}, frozen={FROZEN: params})

  def start_round(self, state: TrainState, r: jax.Array) -> TrainState:
    """The state at the first update of round `r`: the round's teacher (round 0: the frozen
    original; later: the sampling parameters of the previous round's student) in
    ``model_state["teacher"]``, the student reset to it, fresh optimizer state and EMAs."""
    teacher = jax.tree.map(lambda f, p: jnp.where(r == 0, f, p), state.frozen[FROZEN],
                           state.ema_params)
    state = state.replace(params=teacher, model_state={**state.model_state, TEACHER: teacher})
    return state.with_rules(state.rules)

  def loss_fn(self, params, teacher_params, num_steps, teacher_is_original,
              batch: dict[str, jax.Array], rng: jax.Array, *, train: bool = True
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The distillation loss of the student `params` against the round's teacher."""
    loss_rng, dropout_rng = jax.random.split(rng)
    student = self.model_fn(params, train=train, dropout_rng=dropout_rng)
    teacher_fn = self.model_fn(teacher_params)
    if self.teacher_prediction == self.prediction:
      teacher_x0 = to_x0_fn(teacher_fn, self.schedule, self.prediction)
    else:  # round 0's teacher speaks its own parameterization, later ones the student's
      original = to_x0_fn(teacher_fn, self.schedule, self.teacher_prediction)
      distilled = to_x0_fn(teacher_fn, self.schedule, self.prediction)

      def teacher_x0(z, t):
        return jax.lax.cond(teacher_is_original, original, distilled, z, t)
    return distillation_loss(student, teacher_x0, self.schedule, batch["image"], loss_rng,
                             num_steps, prediction=self.prediction, weighting=self.weighting,
                             clip_teacher=self.clip_teacher)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    r = self.rounds.round_of(state.step)
    boundary = state.step % self.rounds.steps_per_round == 0
    state = jax.lax.cond(boundary, lambda s: self.start_round(s, r), lambda s: s, state)
    n = self.rounds.steps_of_round(r)
    state, metrics = state.gradient_step(self.loss_fn, state.model_state[TEACHER], n, r == 0,
                                         batch, rng)
    return state, {**metrics, "round": r.astype(jnp.float32),
                   "student_steps": n.astype(jnp.float32)}

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """The distillation loss of the sampling parameters against the round's teacher (dropout
    off) on a held-out batch, at the round of the state's last update."""
    r = self.rounds.round_of(jnp.maximum(state.step - 1, 0))
    _, metrics = self.loss_fn(state.ema_params, state.model_state[TEACHER],
                              self.rounds.steps_of_round(r), r == 0, batch, rng, train=False)
    return metrics

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images: DDIM with the student at `sample_steps` (0: the state's distilled N)."""
    distilled = self.rounds.distilled_steps(state.step)
    steps = self.sample_steps or distilled
    if self.sample_steps:
      jax.debug.callback(_warn_if_off_grid, state.step, distilled, self.sample_steps)
    x0_fn = to_x0_fn(self.model_fn(state.ema_params), self.schedule, self.prediction)
    return student_ddim_sample(x0_fn, self.schedule, rng, (n, *self.image_shape), steps=steps,
                               clip_denoised=self.clip_denoised)

  @property
  def sample_tag(self) -> str:
    return (f"pd_ddim{self.sample_steps}" if self.sample_steps else "pd_ddim_distilled")


# ------------------------------------------------------------------ config boundary


def load_teacher(workdir: str) -> tuple[ddpm_lib.DDPM, Any]:
  """The `DDPM` method of a trained unconditional `diffusion.ddpm` run, rebuilt from its run
  record, and its config.

  Raises:
    ValueError: no run record, or the run is not an unconditional DDPM.
  """
  try:
    config = run_record.latest_config(workdir)
  except run_record.RunRecordError as e:
    raise ValueError(f"init_from.workdir={workdir!r}: {e}. Point it at the workdir of a "
                     "trained experiments/ddpm/digits.py run") from e
  if config.get("method") != "diffusion.ddpm":
    raise ValueError(f"init_from.workdir={workdir!r} is a {config.get('method')!r} run, not a "
                     "'diffusion.ddpm' one: distill a DDPM (experiments/ddpm/digits.py "
                     "--config.diffusion.prediction=v)")
  method = load_method(config)
  if isinstance(method, ddpm_lib.ConditionalDDPM):
    raise ValueError(f"the teacher {workdir} is class-conditional or classifier-guided; "
                     "progressive distillation here distills unconditional DDPMs")
  return method, config


def make_method(config: Any) -> ProgressiveDistillation:
  """Translates a config (`init_from`, `diffusion`, `model.dropout`, `optim`, `train`, `sample`)
  into the method; the teacher is read and checked here, before any compile.

  Raises:
    ValueError: no teacher load, a run that is not an unconditional DDPM, data settings or
      checkpoint shapes that differ from the teacher's, bad round settings, or more training
      steps than the rounds hold.
  """
  spec = init_from_lib.frozen_load(
      config, FROZEN, hint=" (experiments/distill/progressive_digits.py sets it)",
      needs="diffusion.progressive_distillation distills a trained DDPM: set "
            "--config.init_from.workdir=<a diffusion.ddpm run's workdir>")
  teacher, t_config = load_teacher(spec.workdir)
  if spec.subtree:
    raise ValueError(f"init_from.subtree={spec.subtree!r}: the teacher is the whole DDPM "
                     "parameter tree; set --config.init_from.subtree=''")
  size, channels = config.data.image_size, config.data.channels
  if (size, channels) != (t_config.data.image_size, t_config.data.channels):
    raise ValueError(
        f"data.image_size/channels = {size}/{channels}, but the teacher {spec.workdir} was "
        f"trained on {t_config.data.image_size}/{t_config.data.channels}: set them to match")
  tree, step = init_from_lib.load(spec)
  image = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
  abstract = jax.eval_shape(lambda r, x: teacher.init(r, {"image": x}).params,
                            jax.random.key(0), image)
  init_from_lib.raise_problems(
      init_from_lib.fit_problems(abstract, tree, where=f"frozen/{FROZEN}",
                                 what=f"{spec.source}/{spec.subtree}", require_all=True),
      what=f"the teacher {spec.workdir} step {step}")
  del tree

  d = config.diffusion
  rounds = RoundSchedule(int(d.start_steps), int(d.final_steps), int(d.steps_per_round))
  if config.train.num_steps > rounds.total_steps:
    raise ValueError(
        f"train.num_steps={config.train.num_steps} exceeds the {rounds.num_rounds} rounds "
        f"{rounds.start_steps} -> {rounds.final_steps} steps x {rounds.steps_per_round} updates "
        f"= {rounds.total_steps}: set train.num_steps <= {rounds.total_steps} (or lower "
        "diffusion.final_steps for more rounds)")
  prediction = d.prediction
  if teacher.prediction != prediction:
    log.warning("the teacher %s predicts %r, the student %r: the student starts from the "
                "teacher's weights with their output re-read as %r, far from the teacher; "
                "train the teacher with --config.diffusion.prediction=%s instead",
                spec.workdir, teacher.prediction, prediction, prediction, prediction)
  model = dataclasses.replace(teacher.model, dropout=float(config.model.dropout),
                              dtype=compute_dtype(config.model.dtype))
  ema_decay = float(config.train.ema_decay)
  s = config.sample
  log.info("progressive distillation of %s (step %d, %s prediction, T=%d): %d rounds %d -> %d "
           "steps, %d updates each", spec.workdir, step, teacher.prediction,
           teacher.schedule.num_timesteps, rounds.num_rounds, rounds.start_steps,
           rounds.final_steps, rounds.steps_per_round)
  return ProgressiveDistillation(
      model=model, schedule=teacher.schedule,
      tx=make_optimizer(config.optim, total_steps=rounds.steps_per_round),
      image_shape=(size, size, channels), rounds=rounds,
      teacher_prediction=teacher.prediction, prediction=prediction,
      weighting=d.weighting, clip_teacher=bool(d.clip_teacher),
      ema_decay=ema_decay if ema_decay > 0 else None,
      ema_warmup=bool(config.train.ema_warmup), sample_steps=int(s.steps),
      clip_denoised=bool(s.clip_denoised), teacher_workdir=spec.workdir)
