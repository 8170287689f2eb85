"""Flow matching and rectified flow (Lipman et al. 2023; Liu et al. 2023), `config.method =
"diffusion.flow_matching"`.

On the straight path x_t = (1 - t) x0 + t eps (`jgen.ops.processes.Linear`; t = 0 is data and
t = 1 the N(0, I) prior, Stable Diffusion 3's convention, the reverse of Lipman et al.'s) the
network learns the velocity field by conditional OT flow matching,

    L = E_{t ~ p(t), x0, eps} || u_theta(x_t, t) - (eps - x0) ||^2,

and samples by integrating dx/dt = u_theta from t = 1 to 0 (`jgen.diffusion.ode`: 'ode_euler',
'ode_heun', 'ode_midpoint', any step count, optional SD3 timestep shift). p(t)
(``flow_matching.time_distribution``, `sample_times`): 'uniform'; 'logit_normal', t =
sigmoid(m + s n), n ~ N(0, 1) (SD3's default m = 0, s = 1; Esser et al. 2024, Eq. 19); or
'mode', t = 1 - u - s (cos^2(pi u / 2) - 1 + u), u ~ U(0, 1) (their Eq. 20, s in [-1, 2 / (pi -
2)]). The U-Net sees t scaled by ``flow_matching.time_input`` (1000: the range of DDPM's
timesteps, as SD3 feeds its transformer).

Everything else is `jgen.diffusion.ddpm.DDPM` with `FlowMatchingObjective`: class conditions
with classifier-free guidance on the velocity (``model.num_classes`` > 0; CFG is linear, so
guiding u is guiding eps), EMA, the loop. ``flow_matching.latent`` trains it on the latents of
a frozen first stage instead (`jgen.diffusion.ldm`'s stage 2, label or text conditions).

**Reflow** (`Reflow`, ``flow_matching.reflow.pairs`` > 0): the 1-rectified flow of
``init_from.workdir`` draws ``pairs`` couples (z, x1 = ODE(z)) with its own sampler, once, cached
in ``workdir/reflow``; the 2-rectified flow, initialised from it, is trained on
x_t = (1 - t) x1 + t z with target z - x1, which straightens the paths so that 1-2 Euler steps
sample well (Liu et al. 2023, Sec. 2.2).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from jgen.diffusion import ddpm as ddpm_lib
from jgen.diffusion import ldm as ldm_lib
from jgen.diffusion.losses import continuous_loss
from jgen.ops.processes import PREDICTIONS, Linear, Process, process_by_name
from jgen.ops.schedules import Schedule
from jgen.train import cache
from jgen.train import init_from as init_from_lib
from jgen.train.state import TrainState

log = logging.getLogger(__name__)

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]

TIME_DISTRIBUTIONS = ("uniform", "logit_normal", "mode")
MODE_SCALE_RANGE = (-1.0, 2.0 / (math.pi - 2.0))


def check_time_distribution(distribution: str, scale: float) -> None:
  """Raises ValueError for an unknown distribution or a scale outside its range."""
  if distribution not in TIME_DISTRIBUTIONS:
    raise ValueError(f"unknown time_distribution {distribution!r}; choose one of "
                     f"{TIME_DISTRIBUTIONS}")
  if distribution == "logit_normal" and scale <= 0:
    raise ValueError(f"the logit-normal scale must be > 0, got {scale}")
  lo, hi = MODE_SCALE_RANGE
  if distribution == "mode" and not lo <= scale <= hi:
    raise ValueError(f"the mode-sampling scale must lie in [{lo}, {hi:.4f}] (t must stay "
                     f"monotone in u), got {scale}")


def sample_times(rng: jax.Array, n: int, *, distribution: str = "logit_normal",
                 loc: float = 0.0, scale: float = 1.0) -> jax.Array:
  """n training times in [0, 1] from p(t) (module docstring), float32 [n].

  Args:
    rng: PRNG key.
    n: Static number of times.
    distribution: 'uniform', 'logit_normal' or 'mode'.
    loc: m of 'logit_normal' (unused otherwise).
    scale: s of 'logit_normal' or 'mode'.
  """
  check_time_distribution(distribution, scale)
  if distribution == "logit_normal":
    return jax.nn.sigmoid(loc + scale * jax.random.normal(rng, (n,), jnp.float32))
  u = jax.random.uniform(rng, (n,), jnp.float32)
  if distribution == "uniform":
    return u
  return 1.0 - u - scale * (jnp.square(jnp.cos(0.5 * jnp.pi * u)) - 1.0 + u)


@dataclasses.dataclass(frozen=True)
class FlowMatchingObjective(ddpm_lib.Objective):
  """Conditional flow matching on a continuous process (`Linear` for flow matching / rectified
  flow): t ~ p(t) mapped onto [t_min, t_max], the target `process.target` of the prediction
  (the velocity eps - x0 on the linear path), the network called at `time_input` * t, and the
  samplers handed the network's own prediction.

  Attributes:
    distribution, loc, scale: p(t) (`sample_times`).
    time_input: the factor from process time to the U-Net's time input.
  """

  distribution: str = "logit_normal"
  loc: float = 0.0
  scale: float = 1.0
  time_input: float = 1000.0

  def check(self, process: Process, prediction: str) -> None:
    check_time_distribution(self.distribution, self.scale)
    if isinstance(process, Schedule):
      raise ValueError("flow matching trains on a continuous process (Linear, VP, VE, EDM), "
                       "not DDPM's discrete chain")
    if prediction not in PREDICTIONS:
      raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")

  def network_fn(self, apply: ModelFn, process: Process, prediction: str) -> ModelFn:
    return lambda x, t: apply(x, self.time_input * jnp.asarray(t, jnp.float32))

  def times(self, process: Process, rng: jax.Array, n: int) -> jax.Array:
    """n training times on [t_min, t_max] of `process`."""
    u = sample_times(rng, n, distribution=self.distribution, loc=self.loc, scale=self.scale)
    return process.t_min + u * (process.t_max - process.t_min)

  def loss(self, model_fn, process, x0, rng, *, prediction, loss_type):
    return continuous_loss(model_fn, process, x0, rng,
                           sample_times=functools.partial(self.times, process),
                           prediction=prediction, loss_type=loss_type)

  def sampling_prediction(self, prediction: str) -> str:
    return prediction


def make_flow_matching(config: Any, *, image_shape: tuple[int, int, int],
                       guidance_scale: float | None = None) -> ddpm_lib.DDPM:
  """The flow-matching `DDPM` (`FlowMatchingObjective` on ``flow_matching.process``, by default
  the linear path) of a config's `model`,
  `diffusion`, `flow_matching`, `optim`, `train` and `sample` blocks
  (experiments/ddpm/base.py `flow_matching`), on arrays of `image_shape`."""
  fields = ddpm_lib.denoiser_fields(config, image_shape=image_shape,
                                    guidance_scale=guidance_scale)
  f = config.flow_matching
  objective = FlowMatchingObjective(distribution=str(f.time_distribution), loc=float(f.loc),
                                    scale=float(f.scale), time_input=float(f.time_input))
  cls = ddpm_lib.denoiser_class(fields)
  return cls(**fields, schedule=process_by_name(str(f.process)), objective=objective,
             shift=float(config.sample.shift))


def make_method(config: Any) -> Any:
  """Flow matching on images, on a frozen first stage's latents (``flow_matching.latent``), or
  a reflow stage on a trained flow (``flow_matching.reflow.pairs`` > 0)."""
  f = config.flow_matching
  if f.latent and f.reflow.pairs:
    raise ValueError("flow_matching.reflow runs in pixel space: set flow_matching.latent=False")
  if f.latent:
    return ldm_lib.make_method(config, make_diffusion=make_flow_matching)
  size = config.data.image_size
  flow = make_flow_matching(config, image_shape=(size, size, config.data.channels))
  if not f.reflow.pairs:
    return flow
  parent = config.init_from.workdir
  if not parent:
    raise ValueError("a reflow stage draws its pairs from a trained flow: set "
                     "--config.init_from.workdir=<a diffusion.flow_matching run>")
  cls = ConditionalReflow if flow.model.num_classes > 0 else Reflow
  return cls(flow=flow, num_pairs=int(f.reflow.pairs), seed=int(f.reflow.seed),
                parent_load=init_from_lib.InitFrom(parent, step=config.init_from.step,
                                                   source="ema"))


@dataclasses.dataclass(frozen=True, eq=False)
class Reflow:
  """The k+1-rectified flow trained on couples (z, x1) drawn by a k-rectified flow.

  `prepare` draws (or reads) the couples; they enter every step as ``state.frozen["pairs"]``
  (``noise`` [N, H, W, C], ``image`` [N, H, W, C] and, for a class-conditional flow, ``label``
  [N]), and each step trains on a random batch of them:
  L = E_t || u_theta(x_t, t) - (z - x1) ||^2 with x_t = (1 - t) x1 + t z. The data batch only
  sets the batch size. Sampling, evaluation and guidance are the flow's.

  Attributes:
    flow: the flow-matching method (its U-Net, objective and sampler).
    num_pairs: N couples.
    seed: the key of the couples' noise.
    parent_load: the ``init_from`` load of the parent flow (EMA weights: they draw the couples;
      its fingerprint names the cache).
    pairs: the couples once `prepare` has made or read them.
  """

  flow: ddpm_lib.DDPM
  num_pairs: int
  seed: int = 0
  parent_load: init_from_lib.InitFrom | None = None
  pairs: dict[str, np.ndarray] | None = None

  def __post_init__(self):
    if (not isinstance(self.flow.objective, FlowMatchingObjective)
        or not isinstance(self.flow.schedule, Linear)):
      raise ValueError("reflow trains a flow-matching model on the linear path "
                       "(diffusion.flow_matching)")
    if self.num_pairs < 1:
      raise ValueError(f"flow_matching.reflow.pairs must be >= 1, got {self.num_pairs}")

  @property
  def conditional(self) -> bool:
    return self.flow.model.num_classes > 0

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.flow.image_shape

  @property
  def sample_tag(self) -> str:
    return "reflow_" + self.flow.sample_tag

  # ------------------------------------------------------------------ the couples

  def draw_pairs(self, params: Any) -> dict[str, np.ndarray]:
    """`num_pairs` couples from the flow with `params` (its sampler, guidance and labels
    0, 1, ..., K-1, 0, ... when conditional), float32."""
    chunk = min(self.num_pairs, 256)
    shape = (chunk, *self.image_shape)

    @jax.jit
    def draw(params, rng, labels):
      z = jax.random.normal(rng, shape, jnp.float32)
      fn = (self.flow.guided_sampling_fn(params, {"label": labels}) if self.conditional
            else self.flow.sampling_fn(params))
      return z, self.flow.run_sampler(fn, rng, chunk, x_T=z)

    key, noise, images, labels = jax.random.key(self.seed), [], [], []
    for i in range(-(-self.num_pairs // chunk)):
      lab = jnp.asarray(np.arange(i * chunk, (i + 1) * chunk)
                        % max(self.flow.model.num_classes, 1), jnp.int32)
      z, x1 = draw(params, jax.random.fold_in(key, i), lab)
      noise.append(np.asarray(z))
      images.append(np.asarray(x1))
      labels.append(np.asarray(lab))
    out = {"noise": np.concatenate(noise)[:self.num_pairs],
           "image": np.concatenate(images)[:self.num_pairs]}
    if self.conditional:
      out["label"] = np.concatenate(labels)[:self.num_pairs]
    return out

  def prepare(self, workdir: str) -> "Reflow":
    """The method with its couples: read from ``workdir/reflow`` if there (drawn by the same
    parent checkpoint), else drawn by the parent's EMA parameters and cached there."""
    if self.pairs is not None:
      return self
    parent, step = init_from_lib.load(self.parent_load)
    tag = init_from_lib.fingerprint(parent)[:12]
    path = epath.Path(workdir) / "reflow" / (
        f"pairs_n{self.num_pairs}_seed{self.seed}_{self.flow.sample_tag}_{tag}.npz")
    if path.exists():
      with path.open("rb") as f, np.load(f) as z:
        pairs = {k: z[k] for k in z.files}
      log.info("reflow: %d couples read from %s", self.num_pairs, path)
    else:
      pairs = self.draw_pairs(jax.device_put(parent))
      cache.write_npz(path, pairs)
      log.info("reflow: %d couples drawn by the parent flow (step %d), cached in %s",
               self.num_pairs, step, path)
    return dataclasses.replace(self, pairs=pairs)

  # ------------------------------------------------------------------ training

  def _pairs_or_zeros(self) -> dict[str, jax.Array]:
    if self.pairs is not None:
      return {k: jnp.asarray(v) for k, v in self.pairs.items()}
    shape = (self.num_pairs, *self.image_shape)
    out = {"noise": jnp.zeros(shape, jnp.float32), "image": jnp.zeros(shape, jnp.float32)}
    if self.conditional:
      out["label"] = jnp.zeros((self.num_pairs,), jnp.int32)
    return out

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    state = self.flow.init(rng, batch)
    return state.replace(frozen={**state.frozen, "pairs": self._pairs_or_zeros()})

  def example_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    return self.flow.example_batch(batch_size)

  def pair_loss(self, params, pairs: dict[str, jax.Array], n: int, rng: jax.Array, *,
                train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The reflow loss on n couples drawn at random (dropout and CFG dropout when `train`)."""
    pick_rng, t_rng, dropout_rng, cond_rng = jax.random.split(rng, 4)
    idx = jax.random.randint(pick_rng, (n,), 0, pairs["noise"].shape[0])
    z, x1 = pairs["noise"][idx], pairs["image"][idx]
    batch = {"image": x1, **({"label": pairs["label"][idx]} if self.conditional else {})}
    conditions = (self.flow.train_conditions(batch, cond_rng) if train
                  else self.flow.batch_conditions(batch))
    model_fn = self.flow.model_fn(params, conditions, train=train, dropout_rng=dropout_rng)
    objective = self.flow.objective
    return continuous_loss(model_fn, self.flow.schedule, x1, t_rng,
                           sample_times=functools.partial(objective.times, self.flow.schedule),
                           prediction=self.flow.prediction, loss_type=self.flow.loss_type,
                           noise=z)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    n = batch["image"].shape[0]
    pairs = state.frozen["pairs"]
    return state.gradient_step(
        lambda params, _, r: self.pair_loss(params, pairs, n, r, train=True), batch, rng)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """The reflow loss of the EMA parameters on random couples (dropout off)."""
    _, metrics = self.pair_loss(state.ema_params, state.frozen["pairs"],
                                batch["image"].shape[0], rng, train=False)
    return metrics

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    return self.flow.sample(state, rng, n)


@dataclasses.dataclass(frozen=True, eq=False)
class ConditionalReflow(Reflow):
  """A `Reflow` of a class-conditional flow: the loop's `Conditional`."""

  @property
  def num_classes(self) -> int:
    return self.flow.num_classes

  def sample_conditional(self, state: TrainState, rng: jax.Array,
                         conditions: dict[str, jax.Array], n: int) -> jax.Array:
    return self.flow.sample_conditional(state, rng, conditions, n)
