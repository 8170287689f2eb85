"""Progressive GAN (Karras et al. 2018). `method = "gan.progan"`.

Networks: `jgen.nn.progan` (equalized learning rate, pixel norm, minibatch stddev, fade-in).

Loss: WGAN-GP with the drift term. The critic minimizes

    E[D(G(z))] - E[D(x)] + lambda E[(||grad D(x_hat)|| - 1)^2] + eps_drift E[D(x)^2]

(lambda = `gan.gp_weight` = 10, eps_drift = `gan.drift` = 0.001, which keeps the critic's
scores from drifting far from 0); the generator minimizes -E[D(G(z))]; one critic step per
generator step. Adam(1e-3, b1=0, b2=0.99, eps=1e-8) for both (the paper and its reference code,
`G_lrate_base = D_lrate_base = 0.001`); an EMA of G with decay 0.999, no warm-up (the reference
starts the average at the initial weights). The gradient penalty is `jgen.gan.updates.
gradient_penalty` on the interpolates of the phase's real and fake images; as in the reference
code it differentiates the sum of the interpolates' scores, so through the minibatch stddev
each score also depends (weakly) on the other members of its group.

Growth: with L = log2(target) - 1 levels (4x4, 8x8, ..., target) and S steps per phase
(S = ceil(`gan.images_per_phase` / `data.batch_size`)), the phases are

    phase 0: 4x4, stable;  phase 2l - 1: fade in level l;  phase 2l: level l, stable

for l = 1 .. L - 1, each S steps, the last one lasting to the end of the run (2L - 1 phases;
the paper: 800k images per fade-in and per stabilization). At step s (completed updates), the
phase is p = min(s // S, 2L - 2) and alpha = (s - p S) / S during a fade-in (0, 1/S, ...,
(S-1)/S), 1 otherwise: `phase_at(s)`, a pure function of the step. At the first step of each
phase the optimizers' states are reset to fresh ones (`gan.reset_optimizer`, the reference
code's `reset_opt_for_new_lod`).

Real images: the loop's batch is at the target size; the phase's reals are its 2^k x 2^k
average pooling to the phase's resolution r and, during the fade-in of r, blended as the
generator's output is: x = alpha x_r + (1 - alpha) upsample(avgpool(x_r)).

One compiled step: every phase is one branch of `lax.switch` inside the loop's one jitted
train_step, each branch with its static resolution and fade flag (2L - 1 branches), indexed by
`phase_at(state.step)`; every parameter of every level exists from step 0. Hence resume is
exact inside and across phases (the phase, alpha, keys and batch order all follow from the step).

Sampling (`sample`, `--mode=sample`): the EMA generator at the phase of the state's step (for a
finished run: the target resolution; for a run stopped earlier: the resolution and alpha it was
training at), upsampled (nearest) to the target size so that every sample has the data's shape.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jgen.gan import ada as ada_lib
from jgen.gan import losses, updates
from jgen.gan.adversarial import ada_fields
from jgen.nn import progan as nets
from jgen.nn.dtypes import compute_dtype
from jgen.nn.layers import mean_pool, upsample_nearest
from jgen.train.optim import make_optimizer
from jgen.train.state import EmaSpec, TrainState, per_network

PyTree = Any

__all__ = ["GrowthSchedule", "ProGAN", "downsample_to", "drift_critic_loss", "make_method",
           "real_images_at"]


@dataclasses.dataclass(frozen=True)
class GrowthSchedule:
  """The growth schedule: `num_levels` levels, `steps_per_phase` steps per phase."""

  num_levels: int
  steps_per_phase: int

  def __post_init__(self):
    if self.num_levels < 1 or self.steps_per_phase < 1:
      raise ValueError(f"a ProGAN schedule needs >= 1 level and >= 1 step per phase, got "
                       f"{self.num_levels} levels, {self.steps_per_phase} steps")

  @classmethod
  def from_images(cls, num_levels: int, images_per_phase: int, batch_size: int
                  ) -> "GrowthSchedule":
    """S = ceil(images_per_phase / batch_size) steps per phase."""
    if images_per_phase < 1:
      raise ValueError(f"gan.images_per_phase must be >= 1, got {images_per_phase}")
    return cls(num_levels, math.ceil(images_per_phase / batch_size))

  @property
  def num_phases(self) -> int:
    return 2 * self.num_levels - 1

  @property
  def growth_steps(self) -> int:
    """Steps until the last phase (the target's stabilization) starts."""
    return (self.num_phases - 1) * self.steps_per_phase

  def phase(self, p: int) -> tuple[int, bool]:
    """(level, fading) of phase p."""
    return (p + 1) // 2, p % 2 == 1

  def phase_at(self, step: jax.Array | int) -> tuple[jax.Array, jax.Array]:
    """(phase index int32, alpha float32) of the update taken at `step` (0-based)."""
    step = jnp.asarray(step, jnp.int32)
    p = jnp.minimum(step // self.steps_per_phase, self.num_phases - 1)
    into = (step - p * self.steps_per_phase).astype(jnp.float32) / self.steps_per_phase
    alpha = jnp.where(p % 2 == 1, into, 1.0).astype(jnp.float32)
    return p.astype(jnp.int32), alpha


def downsample_to(x: jax.Array, resolution: int) -> jax.Array:
  """Average pooling of [B, H, W, C] by H / resolution (a power of two)."""
  factor = x.shape[1] // resolution
  if factor * resolution != x.shape[1] or factor & (factor - 1):
    raise ValueError(f"cannot pool a {x.shape[1]}x{x.shape[1]} image to {resolution}x"
                     f"{resolution}")
  if factor == 1:
    return x
  return jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, factor, factor, 1),
                               (1, factor, factor, 1), "VALID") / (factor * factor)


def real_images_at(x: jax.Array, level: int, *, fading: bool, alpha: jax.Array | float
                   ) -> jax.Array:
  """The phase's reals: x_r = avgpool(x) at r = 4 * 2^level; during a fade-in
  alpha x_r + (1 - alpha) upsample(avgpool(x_r))."""
  x_r = downsample_to(x, 4 * 2 ** level)
  if not fading:
    return x_r
  return alpha * x_r + (1.0 - alpha) * upsample_nearest(mean_pool(x_r))


def drift_critic_loss(drift: float):
  """`fn(real, fake) -> E[fake] - E[real] + drift E[real^2]`, the critic's loss."""

  def fn(real_logits, fake_logits):
    return (losses.discriminator_loss("wasserstein", real_logits, fake_logits)
            + drift * jnp.mean(jnp.square(real_logits.astype(jnp.float32))))

  return fn


@dataclasses.dataclass(frozen=True, eq=False)
class ProGAN:
  """Progressive GAN as a method of the loop (see the module docstring).

  Attributes:
    generator, discriminator: `jgen.nn.progan` networks with one level per schedule level.
    tx_g, tx_d: the optimizers.
    schedule: the growth schedule.
    image_size: the target resolution (the data's).
    z_dim: latent size, z ~ N(0, I).
    gp_weight: lambda of the gradient penalty.
    drift: eps_drift.
    reset_optimizer: fresh optimizer states at the first step of every phase.
    ema_decay, ema_warmup: the generator's EMA.
    ada, ada_p, ada_target, ada_interval, ada_kimg, ada_ops: ADA as in
      `jgen.gan.adversarial.GAN`: every image the critic sees at the phase's resolution
      (reals, fakes, the gradient penalty's interpolates, the generator's step) goes through
      `jgen.gan.ada.augment` at p, tuned from r_t = E[sign D(real)] (``model_state["ada"]``).
  """

  generator: nets.ProGANGenerator
  discriminator: nets.ProGANDiscriminator
  tx_g: optax.GradientTransformation
  tx_d: optax.GradientTransformation
  schedule: GrowthSchedule
  image_size: int
  z_dim: int = 512
  gp_weight: float = 10.0
  drift: float = 0.001
  reset_optimizer: bool = True
  ema_decay: float = 0.999
  ema_warmup: bool = False
  ada: bool = False
  ada_p: float = 0.0
  ada_target: float | None = 0.6
  ada_interval: int = 4
  ada_kimg: float = 500.0
  ada_ops: tuple[str, ...] = ada_lib.OPS
  name: str = "progan"

  # ------------------------------------------------------------------ networks of a phase

  def g_apply(self, level: int, fading: bool, alpha) -> updates.ApplyFn:
    def apply(params, model_state, z, conditions=None, *, train):
      del conditions, train
      out = self.generator.apply({"params": params}, z, level=level, fading=fading,
                                 alpha=alpha)
      return out, model_state
    return apply

  def d_apply(self, fading: bool, alpha) -> updates.ApplyFn:
    def apply(params, model_state, x, conditions=None, *, train):
      del conditions, train
      return self.discriminator.apply({"params": params}, x, fading=fading,
                                      alpha=alpha), model_state
    return apply

  def generate(self, params: PyTree, z: jax.Array, step: jax.Array) -> jax.Array:
    """G at the phase of `step`, nearest-upsampled to the target size (unclipped)."""
    p, alpha = self.schedule.phase_at(step)

    def branch(i):
      level, fading = self.schedule.phase(i)

      def run(params, z, alpha):
        x = self.g_apply(level, fading, alpha)(params, {}, z, train=False)[0]
        while x.shape[1] < self.image_size:
          x = upsample_nearest(x)
        return x
      return run

    return jax.lax.switch(p, [branch(i) for i in range(self.schedule.num_phases)], params, z,
                          alpha)

  # ------------------------------------------------------------------ the loop's contract

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    g_rng, d_rng, state_rng = jax.random.split(rng, 3)
    x = batch["image"][:1]
    if x.shape[1] != self.image_size:
      raise ValueError(f"images are {x.shape[1]}x{x.shape[1]}, the ProGAN target is "
                       f"{self.image_size}; set data.image_size (and data.resize)")
    g_vars = self.generator.init(g_rng, jnp.zeros((1, self.z_dim)),
                                 method=nets.ProGANGenerator.init_all)
    d_vars = self.discriminator.init(d_rng, x, method=nets.ProGANDiscriminator.init_all)
    params = {"generator": g_vars["params"], "discriminator": d_vars["params"]}
    emas = ((EmaSpec("ema", self.ema_decay, self.ema_warmup, "generator/.*"),)
            if self.ema_decay else ())
    model_state = {"generator": {}, "discriminator": {}}
    if self.ada:
      model_state["ada"] = ada_lib.init_state(self.ada_p)
    return TrainState.create(
        params=params, tx=per_network({"generator": self.tx_g, "discriminator": self.tx_d}),
        rng=state_rng, emas=emas, model_state=model_state)

  def _seen_by_d(self, d: updates.ApplyFn, state: TrainState, rng: jax.Array
                 ) -> updates.ApplyFn:
    if not self.ada:
      return d
    return ada_lib.augmented_apply(d, rng, state.model_state["ada"]["p"], self.ada_ops)

  def _phase_step(self, i: int):
    """The train step of phase i (static level and fade flag)."""
    level, fading = self.schedule.phase(i)

    def step(state, images, rng, alpha):
      g, d = self.g_apply(level, fading, alpha), self.d_apply(fading, alpha)
      real = real_images_at(images, level, fading=fading, alpha=alpha)
      b = real.shape[0]
      z = jax.random.normal(jax.random.fold_in(rng, 0), (b, self.z_dim))
      fake, _ = g(state.model_params["generator"], {}, z, train=True)
      d_seen = self._seen_by_d(d, state, jax.random.fold_in(rng, 4))
      state, dm = updates.discriminator_update(
          state, d_seen, real, fake, rng=jax.random.fold_in(rng, 1), step=state.step,
          loss=drift_critic_loss(self.drift),
          regularizers=(updates.gradient_penalty(d_seen, weight=self.gp_weight),))
      z = jax.random.normal(jax.random.fold_in(rng, 2), (b, self.z_dim))
      state, gm = updates.generator_update(state, g, self._seen_by_d(
          d, state, jax.random.fold_in(rng, 5)), z, rng=jax.random.fold_in(rng, 3),
                                           step=state.step, loss="wasserstein")
      wasserstein = dm["real_score"] - dm["fake_score"]
      metrics = {**dm, **gm, "wasserstein": wasserstein,
                 "drift": dm["d_loss"] + wasserstein,  # d_loss = -W + drift E[D(x)^2]
                 "resolution": jnp.float32(4 * 2 ** level)}
      return state, metrics

    return step

  def _reset_at_boundary(self, state: TrainState) -> TrainState:
    s = self.schedule.steps_per_phase
    boundary = ((state.step % s == 0) & (state.step > 0)
                & (state.step <= self.schedule.growth_steps))
    fresh = state.tx.init(state.trainable())
    opt_state = jax.tree.map(lambda f, o: jnp.where(boundary, f, o), fresh, state.opt_state)
    return state.replace(opt_state=opt_state)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    p, alpha = self.schedule.phase_at(state.step)
    if self.reset_optimizer:
      state = self._reset_at_boundary(state)
    branches = [self._phase_step(i) for i in range(self.schedule.num_phases)]
    state, metrics = jax.lax.switch(p, branches, state, batch["image"], rng, alpha)
    metrics = {**metrics, "phase": p.astype(jnp.float32), "alpha": alpha,
               "loss": metrics["d_loss"]}
    if self.ada:
      new, ada_metrics = ada_lib.track(
          state.model_state["ada"], metrics["real_sign"],
          images_per_step=batch["image"].shape[0], interval=self.ada_interval,
          target=self.ada_target, kimg=self.ada_kimg)
      state = state.replace(model_state={**state.model_state, "ada": new})
      metrics.update(ada_metrics)
    return state, metrics

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """The critic at the current phase on held-out reals vs EMA samples: `wasserstein` =
    mean real - mean fake score, `loss` the critic's loss with the drift term."""
    p, alpha = self.schedule.phase_at(state.step)
    z = jax.random.normal(rng, (batch["image"].shape[0], self.z_dim))

    def branch(i):
      level, fading = self.schedule.phase(i)

      def run(g_params, d_params, images, z, alpha):
        real = real_images_at(images, level, fading=fading, alpha=alpha)
        fake = self.g_apply(level, fading, alpha)(g_params, {}, z, train=False)[0]
        d = self.d_apply(fading, alpha)
        real_logits, fake_logits = d(d_params, {}, real, train=False)[0], d(
            d_params, {}, fake, train=False)[0]
        return {"loss": drift_critic_loss(self.drift)(real_logits, fake_logits),
                "real_score": jnp.mean(real_logits), "fake_score": jnp.mean(fake_logits),
                "wasserstein": jnp.mean(real_logits) - jnp.mean(fake_logits)}
      return run

    return jax.lax.switch(p, [branch(i) for i in range(self.schedule.num_phases)],
                          state.ema_params["generator"], state.model_params["discriminator"],
                          batch["image"], z, alpha)

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` EMA-generator images in [-1, 1] at the phase of `state.step` (module docstring)."""
    z = jax.random.normal(rng, (n, self.z_dim))
    return jnp.clip(self.generate(state.ema_params["generator"], z, state.step), -1.0, 1.0)

  @property
  def sample_tag(self) -> str:
    return f"{self.name}_ema"

  def path_length_fns(self, state: TrainState) -> dict[str, Any]:
    """PPL in z (`jgen.metrics.ppl`): slerp at z's typical norm sqrt(z_dim), the EMA
    generator at the state's phase (as `sample`)."""
    params = state.ema_params["generator"]
    return {"space": "z", "latent_shape": (self.z_dim,), "z_radius": math.sqrt(self.z_dim),
            "generator_fn": lambda z: jnp.clip(self.generate(params, z, state.step), -1, 1)}


def make_method(config: Any) -> ProGAN:
  """Translates `model` (z_dim, features per level, mbstd_group), `gan` (images_per_phase,
  gp_weight, drift, reset_optimizer, ADA's fields), `optim` (both networks), `train` into a ProGAN;
  every inconsistency is an error here, before anything compiles."""
  m, g, size = config.model, config.gan, config.data.image_size
  levels = nets.num_levels(size)
  features = tuple(int(f) for f in m.features)
  if len(features) != levels:
    raise ValueError(f"model.features has {len(features)} entries but a {size}x{size} target "
                     f"has {levels} levels (4x4 ... {size}x{size}): give one channel count "
                     "per level, 4x4 first")
  group = m.mbstd_group
  if group and config.data.batch_size > group and config.data.batch_size % group:
    raise ValueError(f"data.batch_size ({config.data.batch_size}) must be a multiple of "
                     f"model.mbstd_group ({group})")
  if not g.gp_weight > 0:
    raise ValueError(f"gan.progan needs gan.gp_weight > 0 (10 in the paper), got {g.gp_weight}")
  schedule = GrowthSchedule.from_images(levels, g.images_per_phase, config.data.batch_size)
  dtype = compute_dtype(m.dtype)
  total = config.train.num_steps
  return ProGAN(
      generator=nets.ProGANGenerator(features=features, channels=config.data.channels,
                                     conv=m.conv, dtype=dtype),
      discriminator=nets.ProGANDiscriminator(features=features, mbstd_group=group,
                                             conv=m.conv, dtype=dtype),
      tx_g=make_optimizer(config.optim, total_steps=total),
      tx_d=make_optimizer(config.optim, total_steps=total),
      schedule=schedule, image_size=size, z_dim=m.z_dim, gp_weight=g.gp_weight,
      drift=g.drift, reset_optimizer=g.reset_optimizer, ema_decay=config.train.ema_decay,
      ema_warmup=config.train.ema_warmup, **ada_fields(g))
