"""DDPM (Ho et al. 2020) as a method of the one train loop; samples with DDPM or DDIM.

`config.method = "diffusion.ddpm"`. The config is translated into typed fields here, at the
boundary; the model, schedule, loss and samplers stay pure and usable without the loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jgen.diffusion.losses import ddpm_loss
from jgen.diffusion.samplers import ddim_sample, ddpm_sample
from jgen.diffusion.schedules import Schedule, get_schedule
from jgen.nn.dtypes import compute_dtype
from jgen.nn.unet import UNet
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState

SAMPLERS = ("ddpm", "ddim")


@dataclasses.dataclass(frozen=True, eq=False)
class DDPM:
  """Epsilon-prediction diffusion model trained with the simple DDPM loss.

  Attributes:
    model: the noise-prediction network, `model.apply(params, x_t, t, train=...) -> eps`.
    schedule: the forward noise process.
    tx: optimizer.
    image_shape: (H, W, C) of the data.
    ema_decay: EMA decay of the sampling parameters.
    ema_warmup: ramp the EMA decay up as (1+step)/(10+step).
    loss_type: 'mse' (the paper's) or 'l1'.
    sampler: 'ddpm' (ancestral, all T steps) or 'ddim'.
    sample_steps: DDIM steps.
    eta: DDIM eta (0: deterministic).
    spacing: DDIM step spacing, 'uniform' or 'quadratic'.
    clip_denoised: clip the predicted x0 to [-1, 1] while sampling.
  """

  model: UNet
  schedule: Schedule
  tx: optax.GradientTransformation
  image_shape: tuple[int, int, int]
  ema_decay: float = 0.9999
  ema_warmup: bool = False
  loss_type: str = "mse"
  sampler: str = "ddim"
  sample_steps: int = 50
  eta: float = 0.0
  spacing: str = "uniform"
  clip_denoised: bool = True

  def __post_init__(self):
    if self.sampler not in SAMPLERS:
      raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {SAMPLERS}")

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    params_rng, state_rng = jax.random.split(rng)
    x = batch["image"][:1]
    params = self.model.init(params_rng, x, jnp.zeros((1,), jnp.int32), train=False)
    return TrainState.create(params=params, tx=self.tx, rng=state_rng,
                             ema_decay=self.ema_decay, ema_warmup=self.ema_warmup)

  def eps_fn(self, params, *, train: bool = False, dropout_rng: jax.Array | None = None):
    """The network as the `eps_fn(x_t, t)` that the loss and samplers take."""
    rngs = {"dropout": dropout_rng} if train else None
    return lambda x, t: self.model.apply(params, x, t, train=train, rngs=rngs)

  def loss_fn(self, params, batch: dict[str, jax.Array], rng: jax.Array
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`loss_fn(params, batch, rng) -> (loss, metrics)` with dropout on."""
    noise_rng, dropout_rng = jax.random.split(rng)
    eps_fn = self.eps_fn(params, train=True, dropout_rng=dropout_rng)
    return ddpm_loss(eps_fn, self.schedule, batch["image"], noise_rng, loss_type=self.loss_type)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return state.gradient_step(self.loss_fn, batch, rng)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """The loss of the EMA parameters (dropout off) on a held-out batch."""
    eps_fn = self.eps_fn(state.ema_params, train=False)
    _, metrics = ddpm_loss(eps_fn, self.schedule, batch["image"], rng,
                           loss_type=self.loss_type)
    return metrics

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images in [-1, 1] from the EMA parameters with the configured sampler."""
    eps_fn = self.eps_fn(state.ema_params, train=False)
    shape = (n, *self.image_shape)
    if self.sampler == "ddpm":
      return ddpm_sample(eps_fn, self.schedule, rng, shape, clip_denoised=self.clip_denoised)
    return ddim_sample(eps_fn, self.schedule, rng, shape, steps=self.sample_steps,
                       eta=self.eta, spacing=self.spacing, clip_denoised=self.clip_denoised)

  @property
  def sample_tag(self) -> str:
    """Names the sampler settings in output file names."""
    if self.sampler == "ddpm":
      return f"ddpm{self.schedule.num_timesteps}"
    return f"ddim{self.sample_steps}_eta{self.eta:g}_{self.spacing}"


def make_unet(model_config: Any) -> UNet:
  """The U-Net of a `config.model` block."""
  return UNet(ch=model_config.ch, ch_mult=tuple(model_config.ch_mult),
              num_res_blocks=model_config.num_res_blocks,
              attn_resolutions=tuple(model_config.attn_resolutions),
              dropout=model_config.dropout, num_groups=model_config.num_groups,
              dtype=compute_dtype(model_config.dtype))


def make_method(config: Any) -> DDPM:
  """Translates an experiment config into a `DDPM`."""
  d = config.diffusion
  schedule = get_schedule(d.schedule, d.num_timesteps,
                          **({"beta_start": d.beta_start, "beta_end": d.beta_end}
                             if d.schedule == "linear" else {}))
  s = config.sample
  return DDPM(model=make_unet(config.model), schedule=schedule,
              tx=make_optimizer(config.optim, total_steps=config.train.num_steps),
              image_shape=(config.data.image_size, config.data.image_size, config.data.channels),
              ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup,
              loss_type=d.loss_type, sampler=s.sampler, sample_steps=s.steps, eta=s.eta,
              spacing=s.spacing, clip_denoised=s.clip_denoised)
