"""DDPM (Ho et al. 2020) as a method of the one train loop, optionally class-conditional.

`config.method = "diffusion.ddpm"`. The config is translated into typed fields here, at the
boundary; the model, schedule, loss and samplers stay pure and usable without the loop.

* `config.diffusion.prediction`: the network predicts 'eps' (the paper's), 'x0' or 'v'
  (`jgen.diffusion.parameterization`); it is trained on that target and converted to eps for
  every sampler with `to_eps_fn`.
* `config.sample.sampler`: 'ddpm' (ancestral, all T steps), 'ddim', 'dpmpp_2m', 'euler' or
  'heun' (`jgen.diffusion.samplers` / `solvers`).
* `config.model.num_classes > 0` makes a `ConditionalDDPM`: the U-Net takes ``label`` (the
  batch field), trained with classifier-free guidance dropout (labels replaced by the null class
  with probability `config.diffusion.cond_drop_prob`) and sampled with guidance scale
  `config.sample.guidance_scale` (`jgen.diffusion.guidance`: 1 = conditional, 0 =
  unconditional). Only it is the loop's `Conditional` method.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.diffusion.guidance import cfg_eps_fn
from jgen.diffusion.losses import ddpm_loss
from jgen.diffusion.parameterization import PREDICTIONS, to_eps_fn
from jgen.diffusion.samplers import ddim_sample, ddpm_sample
from jgen.diffusion.schedules import Schedule, get_schedule
from jgen.diffusion.solvers import DPM_SPACINGS, dpmpp_2m_sample, euler_sample, heun_sample
from jgen.nn.conditioning import conditions_from_batch, drop_conditions, null_conditions
from jgen.nn.dtypes import compute_dtype
from jgen.nn.unet import UNet
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState

SAMPLERS = ("ddpm", "ddim", "dpmpp_2m", "euler", "heun")

Conditions = dict[str, jax.Array]
ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class DDPM:
  """A diffusion model trained with the simple loss; unconditional (see `ConditionalDDPM`).

  Attributes:
    model: the network, `model.apply(params, x_t, t, conditions, train=...) -> prediction`.
    schedule: the forward noise process.
    tx: optimizer.
    image_shape: (H, W, C) of the data.
    ema_decay: EMA decay of the sampling parameters.
    ema_warmup: ramp the EMA decay up as (1+step)/(10+step).
    loss_type: 'mse' (the paper's) or 'l1'.
    prediction: what the network predicts: 'eps', 'x0' or 'v'.
    sampler: 'ddpm' (ancestral, all T steps), 'ddim', 'dpmpp_2m', 'euler' or 'heun'.
    sample_steps: steps (model evaluations for dpmpp_2m / euler) of every sampler but 'ddpm'.
    eta: DDIM eta (0: deterministic).
    spacing: DDIM step spacing, 'uniform' or 'quadratic'.
    dpm_spacing: DPM-Solver++ step spacing, 'linspace', 'leading' or 'trailing'.
    rho: Karras sigma-grid exponent of 'euler' and 'heun'.
    clip_denoised: clip the predicted x0 to [-1, 1] while sampling.
    guidance_scale: classifier-free guidance scale w (conditional models only; 1 = none).
    cond_drop_prob: probability of training with the null condition (conditional only).
  """

  model: UNet
  schedule: Schedule
  tx: optax.GradientTransformation
  image_shape: tuple[int, int, int]
  ema_decay: float = 0.9999
  ema_warmup: bool = False
  loss_type: str = "mse"
  prediction: str = "eps"
  sampler: str = "ddim"
  sample_steps: int = 50
  eta: float = 0.0
  spacing: str = "uniform"
  dpm_spacing: str = "linspace"
  rho: float = 7.0
  clip_denoised: bool = True
  guidance_scale: float = 1.0
  cond_drop_prob: float = 0.1

  def __post_init__(self):
    if self.sampler not in SAMPLERS:
      raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {SAMPLERS}")
    if self.prediction not in PREDICTIONS:
      raise ValueError(f"unknown prediction {self.prediction!r}; choose one of {PREDICTIONS}")
    if self.dpm_spacing not in DPM_SPACINGS:
      raise ValueError(f"unknown dpm_spacing {self.dpm_spacing!r}; choose one of "
                       f"{DPM_SPACINGS}")
    if self.model.num_classes > 0 and not isinstance(self, ConditionalDDPM):
      raise ValueError(f"the U-Net is class-conditional (num_classes={self.model.num_classes});"
                       " use ConditionalDDPM (make_method does when model.num_classes > 0)")
    if not isinstance(self, ConditionalDDPM) and self.guidance_scale != 1.0:
      raise ValueError(f"guidance_scale={self.guidance_scale} needs a class-conditional model; "
                       "set model.num_classes > 0 (or sample.guidance_scale=1.0)")

  @property
  def num_classes(self) -> int:
    """Classes of the label condition (0: unconditional)."""
    return self.model.num_classes

  def batch_conditions(self, batch: dict[str, jax.Array]) -> Conditions | None:
    """The model's conditions of a batch (None when unconditional)."""
    keys = self.model.condition_keys
    return conditions_from_batch(batch, keys) if keys else None

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    params_rng, state_rng = jax.random.split(rng)
    x = batch["image"][:1]
    conditions = ({"label": jnp.zeros((1,), jnp.int32)} if self.num_classes > 0 else None)
    params = self.model.init(params_rng, x, jnp.zeros((1,), jnp.int32), conditions,
                             train=False)
    return TrainState.create(params=params, tx=self.tx, rng=state_rng,
                             ema_decay=self.ema_decay, ema_warmup=self.ema_warmup)

  def model_fn(self, params, conditions: Conditions | None = None, *, train: bool = False,
               dropout_rng: jax.Array | None = None) -> ModelFn:
    """The network's raw prediction (of kind `prediction`) as `fn(x_t, t)`."""
    rngs = {"dropout": dropout_rng} if train else None
    return lambda x, t: self.model.apply(params, x, t, conditions, train=train, rngs=rngs)

  def eps_fn(self, params, conditions: Conditions | None = None, *, train: bool = False,
             dropout_rng: jax.Array | None = None) -> ModelFn:
    """The network as the `eps_fn(x_t, t)` that the samplers take (converted from x0 / v)."""
    return to_eps_fn(self.model_fn(params, conditions, train=train, dropout_rng=dropout_rng),
                     self.schedule, self.prediction)

  def train_conditions(self, batch: dict[str, jax.Array], rng: jax.Array) -> Conditions | None:
    """The conditions a training step feeds the model (with CFG dropout; None if unconditional)."""
    conditions = self.batch_conditions(batch)
    if conditions is None:
      return None
    return drop_conditions(conditions, rng, self.cond_drop_prob, num_classes=self.num_classes)

  def loss_fn(self, params, batch: dict[str, jax.Array], rng: jax.Array
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`loss_fn(params, batch, rng) -> (loss, metrics)` with dropout (and CFG dropout) on."""
    noise_rng, dropout_rng = jax.random.split(rng)
    conditions = self.train_conditions(batch, jax.random.fold_in(rng, 2))
    model_fn = self.model_fn(params, conditions, train=True, dropout_rng=dropout_rng)
    return ddpm_loss(model_fn, self.schedule, batch["image"], noise_rng,
                          prediction=self.prediction, loss_type=self.loss_type)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return state.gradient_step(self.loss_fn, batch, rng)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """The loss of the EMA parameters (dropout off, true conditions) on a held-out batch."""
    model_fn = self.model_fn(state.ema_params, self.batch_conditions(batch), train=False)
    _, metrics = ddpm_loss(model_fn, self.schedule, batch["image"], rng,
                                prediction=self.prediction, loss_type=self.loss_type)
    return metrics

  def run_sampler(self, eps_fn: ModelFn, rng: jax.Array, n: int) -> jax.Array:
    """`n` images in [-1, 1] from `eps_fn(x_t, t)` with the configured sampler."""
    shape = (n, *self.image_shape)
    clip = self.clip_denoised
    if self.sampler == "ddpm":
      return ddpm_sample(eps_fn, self.schedule, rng, shape, clip_denoised=clip)
    if self.sampler == "ddim":
      return ddim_sample(eps_fn, self.schedule, rng, shape, steps=self.sample_steps,
                         eta=self.eta, spacing=self.spacing, clip_denoised=clip)
    if self.sampler == "dpmpp_2m":
      return dpmpp_2m_sample(eps_fn, self.schedule, rng, shape, steps=self.sample_steps,
                             spacing=self.dpm_spacing, clip_denoised=clip)
    solver = euler_sample if self.sampler == "euler" else heun_sample
    return solver(eps_fn, self.schedule, rng, shape, steps=self.sample_steps, rho=self.rho,
                  clip_denoised=clip)

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images in [-1, 1] from the EMA parameters with the configured sampler."""
    return self.run_sampler(self.eps_fn(state.ema_params), rng, n)

  @property
  def sample_tag(self) -> str:
    """Names the sampler settings in output file names."""
    if self.sampler == "ddpm":
      return f"ddpm{self.schedule.num_timesteps}"
    if self.sampler == "ddim":
      return f"ddim{self.sample_steps}_eta{self.eta:g}_{self.spacing}"
    if self.sampler == "dpmpp_2m":
      return f"dpmpp2m{self.sample_steps}_{self.dpm_spacing}"
    return f"{self.sampler}{self.sample_steps}_rho{self.rho:g}"


@dataclasses.dataclass(frozen=True, eq=False)
class ConditionalDDPM(DDPM):
  """A class-conditional `DDPM` (the U-Net has `num_classes` > 0) with classifier-free guidance.

  Trains on the batch's ``label`` with each example's label replaced by the null class
  (`num_classes`) with probability `cond_drop_prob`; samples with guidance scale
  `guidance_scale` (`jgen.diffusion.guidance.cfg_eps_fn`). The loop's `Conditional` method.
  """

  def __post_init__(self):
    super().__post_init__()
    if self.num_classes < 1:
      raise ValueError(f"a ConditionalDDPM needs a U-Net with num_classes > 0, got "
                       f"{self.num_classes}")
    if not 0.0 <= self.cond_drop_prob < 1.0:
      raise ValueError(f"cond_drop_prob must lie in [0, 1), got {self.cond_drop_prob}")

  def guided_eps_fn(self, params, conditions: Conditions) -> ModelFn:
    """The CFG denoiser `eps_fn(x_t, t)` for `conditions` at scale `guidance_scale`."""
    def eps_cond_fn(x, t, c):
      return self.eps_fn(params, c, train=False)(x, t)
    null = null_conditions(conditions, num_classes=self.num_classes)
    return cfg_eps_fn(eps_cond_fn, conditions, null, self.guidance_scale)

  def sample_conditional(self, state: TrainState, rng: jax.Array,
                         conditions: dict[str, jax.Array], n: int) -> jax.Array:
    """`n` images for `conditions` (``{"label": int32 [n]}``, `jgen.nn.conditioning`)."""
    conditions = {k: jnp.asarray(v) for k, v in conditions.items()}
    for k, v in conditions.items():
      if v.shape[0] != n:
        raise ValueError(f"condition {k!r} has batch {v.shape[0]}, expected n={n}")
    return self.run_sampler(self.guided_eps_fn(state.ema_params, conditions), rng, n)

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images, every class in turn (labels 0, 1, ..., K-1, 0, ...)."""
    labels = jnp.asarray(np.arange(n) % self.num_classes, jnp.int32)
    return self.sample_conditional(state, rng, {"label": labels}, n)

  @property
  def sample_tag(self) -> str:
    return f"{super().sample_tag}_w{self.guidance_scale:g}"


def make_unet(model_config: Any) -> UNet:
  """The U-Net of a `config.model` block (`num_classes`, default 0, for label conditioning)."""
  return UNet(ch=model_config.ch, ch_mult=tuple(model_config.ch_mult),
              num_res_blocks=model_config.num_res_blocks,
              attn_resolutions=tuple(model_config.attn_resolutions),
              dropout=model_config.dropout, num_groups=model_config.num_groups,
              num_classes=int(model_config.get("num_classes", 0)),
              dtype=compute_dtype(model_config.dtype))


def make_method(config: Any) -> DDPM:
  """Translates an experiment config into a `DDPM` (a `ConditionalDDPM` if num_classes > 0)."""
  d = config.diffusion
  schedule = get_schedule(d.schedule, d.num_timesteps,
                          **({"beta_start": d.beta_start, "beta_end": d.beta_end}
                             if d.schedule == "linear" else {}))
  s = config.sample
  model = make_unet(config.model)
  cls = ConditionalDDPM if model.num_classes > 0 else DDPM
  return cls(model=model, schedule=schedule,
             tx=make_optimizer(config.optim, total_steps=config.train.num_steps),
             image_shape=(config.data.image_size, config.data.image_size, config.data.channels),
             ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup,
             loss_type=d.loss_type, prediction=d.get("prediction", "eps"),
             sampler=s.sampler, sample_steps=s.steps, eta=s.eta, spacing=s.spacing,
             dpm_spacing=s.get("dpm_spacing", "linspace"), rho=s.get("rho", 7.0),
             clip_denoised=s.clip_denoised, guidance_scale=s.get("guidance_scale", 1.0),
             cond_drop_prob=d.get("cond_drop_prob", 0.1))
