"""Denoising diffusion GAN (Xiao, Kreis & Vahdat 2022). `method = "gan.ddgan"`.

A diffusion process of only T (2..8) large steps, whose denoising distributions are not
Gaussian and are each modelled by a conditional GAN. With the DDPM tables of the T betas
(`jgen.ops.schedules`, indices k = 0..T-1, x_{-1} the data):

* **Schedule** (`vp_betas`): the continuous variance-preserving SDE with
  beta(s) = beta_min + s (beta_max - beta_min), s in [0, 1] (beta_min 0.1, beta_max 20, Song et
  al. 2021), discretized at s_i = s_min + (1 - s_min) i / T, i = 0..T, s_min = 1e-3:
  abar(s) = exp(-beta_min s - (beta_max - beta_min) s^2 / 2) and
  beta_k = 1 - abar(s_{k+1}) / abar(s_k), k = 0..T-1 (the reference's `var_func_vp`; its
  extra beta = 1e-8 before the data, below float32 resolution, is dropped). T = 4: betas
  0.4783, 0.8492, 0.9564, 0.9874; abar_{T-1} = abar(1) / abar(s_min) = 4.32e-5 for every T, so
  x_{T-1} starts from N(0, I).
* **Generator** G(x_k, k, z) -> x0 (`jgen.nn.ddgan.DDGANGenerator`): the paper's NCSN++ with
  AdaGN for z; here jgen's DDPM U-Net, z (N(0, I)) entering through the paper's mapping network
  (pixel norm, then 1 + `n_mlp` dense layers with SiLU) as the U-Net's ``embedding`` condition,
  projected and added to the time embedding; tanh on the output.
* **Implicit denoiser** p(x_{k-1} | x_k) = E_z q(x_{k-1} | x_k, x0 = G(x_k, k, z)): the DDPM
  posterior N(c1_k x0 + c2_k x_k, sigma_k^2 I) drawn by `posterior_sample` (sigma_0 = 0, so
  the last step returns G's x0).
* **Discriminator** D(x_{k-1}, x_k, k) (`jgen.nn.ddgan.TimeConditionalDiscriminator`): the channel
  concatenation of the pair, jgen residual blocks with the time embedding added, minibatch
  standard deviation, a linear score.
* **Losses**: the non-saturating GAN loss on real pairs (x_{k-1}, x_k) ~ q (`q_sample_pair`)
  and fake pairs (x_{k-1} ~ p_theta(. | x_k), x_k), k ~ U{0..T-1}; R1 on the real x_{k-1}
  (x_k and k held fixed), gamma / 2 E ||grad_{x_{k-1}} D||^2, lazy every `r1_every` steps.

One loop step is a composition of `jgen.gan.updates`: `discriminator_update` of D on a real
pair and the current G's fake pair (the pair's x_k and k are D's conditions, so `updates.r1`
differentiates x_{k-1} only), then `generator_update` of G, whose "generator" apply function is
the whole implicit denoiser z -> x_{k-1} (G then the posterior draw), on a fresh k and pair (as
the reference). The lazy R1 of `updates` multiplies the penalty by `r1_every` on the steps it
runs (StyleGAN2); the reference does not, so its gamma = 0.02 every 15 steps is
`r1_gamma = 0.02 / 15` here (the configs say so).

Departures from the reference, for jgen's blocks: additive z conditioning of the time
embedding instead of AdaGN; D's blocks are `jgen.nn.layers.ResBlock` (2x2 mean pooling after
the second conv where the reference FIR-downsamples before it, and no 1/sqrt(2) on the sum).

Sampling (`sample`): x_{T-1} ~ N(0, I), then for k = T-1, ..., 0: x0 = G(x_k, k, z_k),
x_{k-1} ~ q(x_{k-1} | x_k, x0): T generator calls in one `lax.scan`. The step count is T
(`sample.steps` must equal `diffusion.num_timesteps`).

State: `params = {"generator", "discriminator"}`, `tx = per_network(...)`, an EMA of the
generator (`emas["ema"]`, sampling uses it), empty `model_state`s (no batch norm); `step`
counts G updates (the lazy R1 tests it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.gan import losses, updates
from jgen.gan.adversarial import discriminator_optim
from jgen.nn.dtypes import compute_dtype
from jgen.nn.ddgan import DDGANGenerator, TimeConditionalDiscriminator
from jgen.nn.unet import UNet
from jgen.ops.schedules import Schedule, extract, make_schedule, q_posterior_mean_variance
from jgen.train.optim import make_optimizer
from jgen.train.state import EmaSpec, TrainState, per_network

PyTree = Any
Array = jax.Array
Conditions = dict[str, Array]

__all__ = ["DDGAN", "ddgan_schedule", "make_method", "posterior_sample", "q_sample_pair",
           "vp_betas"]


# ---------------------------------------------------------------------- the noise process


def vp_betas(num_steps: int, *, beta_min: float = 0.1, beta_max: float = 20.0,
             s_min: float = 1e-3) -> np.ndarray:
  """The T betas of the VP SDE discretized at T + 1 times (float64).

  beta_k = 1 - abar(s_{k+1}) / abar(s_k), abar(s) = exp(-beta_min s - (beta_max - beta_min)
  s^2 / 2), s_i = s_min + (1 - s_min) i / T.

  Raises:
    ValueError: T < 1, or 0 < beta_min <= beta_max, 0 <= s_min < 1 violated.
  """
  if int(num_steps) != num_steps or num_steps < 1:
    raise ValueError(f"the number of denoising steps T must be a positive int, got {num_steps}")
  if not 0.0 < beta_min <= beta_max:
    raise ValueError(f"need 0 < beta_min <= beta_max, got {beta_min}, {beta_max}")
  if not 0.0 <= s_min < 1.0:
    raise ValueError(f"s_min must lie in [0, 1), got {s_min}")
  s = s_min + (1.0 - s_min) * np.arange(num_steps + 1, dtype=np.float64) / num_steps
  log_abar = -beta_min * s - 0.5 * (beta_max - beta_min) * s**2
  return -np.expm1(log_abar[1:] - log_abar[:-1])


def ddgan_schedule(num_steps: int, *, beta_min: float = 0.1, beta_max: float = 20.0
                   ) -> Schedule:
  """The DDPM tables (`make_schedule`) of `vp_betas`."""
  return make_schedule(vp_betas(num_steps, beta_min=beta_min, beta_max=beta_max))


def q_sample_pair(schedule: Schedule, x0: Array, t: Array, noise_prev: Array, noise: Array
                  ) -> tuple[Array, Array]:
  """A pair (x_{t-1}, x_t) of the forward process (x_{-1} = x0).

  x_{t-1} = sqrt(abar_{t-1}) x0 + sqrt(1 - abar_{t-1}) noise_prev,
  x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) noise.
  """
  abar_prev = extract(schedule.alphas_cumprod_prev, t, x0)
  beta = extract(schedule.betas, t, x0)
  x_prev = jnp.sqrt(abar_prev) * x0 + jnp.sqrt(1.0 - abar_prev) * noise_prev
  return x_prev, jnp.sqrt(1.0 - beta) * x_prev + jnp.sqrt(beta) * noise


def posterior_sample(schedule: Schedule, x0: Array, x_t: Array, t: Array, noise: Array
                     ) -> Array:
  """x_{t-1} = mu_t(x0, x_t) + sigma_t noise, a draw of q(x_{t-1} | x_t, x0).

  mu_t = c1_t x0 + c2_t x_t and sigma_t^2 = beta_t (1 - abar_{t-1}) / (1 - abar_t) (Ho et al.
  2020, eq. 7); sigma_0 = 0, so t = 0 gives x0.
  """
  mean, variance, _ = q_posterior_mean_variance(schedule, x0, x_t, t)
  return mean + jnp.sqrt(variance) * noise


# ---------------------------------------------------------------------- the method


@dataclasses.dataclass(frozen=True, eq=False)
class DDGAN:
  """The denoising diffusion GAN as a method of the loop; see the module docstring.

  Attributes:
    generator: `G(x_t, t, z, *, train) -> x0` (a `DDGANGenerator`).
    discriminator: `D(x_{t-1}, x_t, t, *, train) -> logits [B]`.
    schedule: the T-step process (`ddgan_schedule`).
    tx_g, tx_d: the generator's and the discriminator's optimizers.
    image_shape: (H, W, C).
    z_dim: size of z ~ N(0, I) (the paper's nz = 100).
    r1_gamma: R1 gamma (0: none); the penalty is gamma / 2 E ||grad D||^2.
    r1_every: lazy R1 interval in steps (penalty scaled by it on the steps it runs).
    ema_decay, ema_warmup: EMA of the generator (decay 0: sample with the trained one).
  """

  generator: nn.Module
  discriminator: nn.Module
  schedule: Schedule
  tx_g: optax.GradientTransformation
  tx_d: optax.GradientTransformation
  image_shape: tuple[int, int, int]
  z_dim: int = 100
  r1_gamma: float = 0.02 / 15
  r1_every: int = 15
  ema_decay: float = 0.9999
  ema_warmup: bool = False

  def __post_init__(self):
    if self.z_dim < 1:
      raise ValueError(f"model.z_dim must be >= 1, got {self.z_dim}")
    if self.r1_gamma < 0 or self.r1_every < 1:
      raise ValueError(f"need gan.r1_gamma >= 0 and gan.r1_every >= 1, got {self.r1_gamma}, "
                       f"{self.r1_every}")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"train.ema_decay must lie in [0, 1) (0: no EMA), got {self.ema_decay}")

  @property
  def num_steps(self) -> int:
    """T, the denoising steps of training and sampling."""
    return self.schedule.num_timesteps

  # ------------------------------------------------------------------ apply functions

  def denoise_x0(self, g_params: PyTree, x_t: Array, t: Array, z: Array, *,
                 train: bool = False) -> Array:
    """G's x0 prediction from (x_t, t, z)."""
    return self.generator.apply({"params": g_params}, x_t, t, z, train=train)

  def denoiser_apply(self, params: PyTree, model_state: PyTree, z: Array,
                     conditions: Conditions, *, train: bool) -> tuple[Array, PyTree]:
    """The implicit denoiser as `updates`' generator: z -> x_{t-1} ~ q(. | x_t, G(x_t, t, z)),
    with `conditions` = {"x_t", "t", "noise" (the posterior draw's)}."""
    x_t, t = conditions["x_t"], conditions["t"]
    x0 = self.denoise_x0(params, x_t, t, z, train=train)
    return posterior_sample(self.schedule, x0, x_t, t, conditions["noise"]), model_state

  def d_apply(self, params: PyTree, model_state: PyTree, x_prev: Array,
              conditions: Conditions, *, train: bool) -> tuple[Array, PyTree]:
    """`updates`' critic: D(x_{t-1}, conditions["x_t"], conditions["t"]) -> logits [B]."""
    logits = self.discriminator.apply({"params": params}, x_prev, conditions["x_t"],
                                      conditions["t"], train=train)
    return logits, model_state

  def regularizers(self) -> tuple[updates.Regularizer, ...]:
    if not self.r1_gamma:
      return ()
    return (updates.r1(self.d_apply, gamma=self.r1_gamma, every=self.r1_every),)

  def _draws(self, rng: Array, x0: Array) -> dict[str, Array]:
    """t ~ U{0..T-1}, a real pair (x_{t-1}, x_t), z and the posterior noise for `x0`."""
    k_t, k_prev, k_noise, k_z, k_post = jax.random.split(rng, 5)
    b = x0.shape[0]
    t = jax.random.randint(k_t, (b,), 0, self.num_steps)
    x_prev, x_t = q_sample_pair(self.schedule, x0, t, jax.random.normal(k_prev, x0.shape),
                                jax.random.normal(k_noise, x0.shape))
    return {"t": t, "x_prev": x_prev, "x_t": x_t, "z": jax.random.normal(k_z, (b, self.z_dim)),
            "noise": jax.random.normal(k_post, x0.shape)}

  # ------------------------------------------------------------------ the loop's contract

  def init(self, rng: Array, batch: dict[str, Array]) -> TrainState:
    x = batch["image"][:1]
    if tuple(x.shape[1:]) != tuple(self.image_shape):
      raise ValueError(f"the batch's images are {tuple(x.shape[1:])}, the model is built for "
                       f"{self.image_shape}: set data.image_size / data.channels")
    g_rng, d_rng, state_rng = jax.random.split(rng, 3)
    t = jnp.zeros((1,), jnp.int32)
    g_vars = self.generator.init(g_rng, x, t, jnp.zeros((1, self.z_dim)), train=False)
    d_vars = self.discriminator.init(d_rng, x, x, t, train=False)
    params = {"generator": g_vars["params"], "discriminator": d_vars["params"]}
    emas = ((EmaSpec("ema", self.ema_decay, self.ema_warmup, "generator/.*"),)
            if self.ema_decay else ())
    return TrainState.create(
        params=params, tx=per_network({"generator": self.tx_g, "discriminator": self.tx_d}),
        rng=state_rng, emas=emas, model_state={"generator": {}, "discriminator": {}})

  def train_step(self, state: TrainState, batch: dict[str, Array], rng: Array
                 ) -> tuple[TrainState, dict[str, Array]]:
    """One D step, then one G step (keys: fold_in(rng, 0) D draws, 1 R1, 2 G draws, 3 G)."""
    x0 = batch["image"].astype(jnp.float32)
    d = self._draws(jax.random.fold_in(rng, 0), x0)
    cond = {"x_t": d["x_t"], "t": d["t"]}
    fake, _ = self.denoiser_apply(state.model_params["generator"], {}, d["z"],
                                  {**cond, "noise": d["noise"]}, train=True)
    state, d_metrics = updates.discriminator_update(
        state, self.d_apply, d["x_prev"], fake, rng=jax.random.fold_in(rng, 1),
        step=state.step, conditions=cond, loss="non_saturating",
        regularizers=self.regularizers())

    g = self._draws(jax.random.fold_in(rng, 2), x0)
    state, g_metrics = updates.generator_update(
        state, self.denoiser_apply, self.d_apply, g["z"], rng=jax.random.fold_in(rng, 3),
        step=state.step, conditions={"x_t": g["x_t"], "t": g["t"], "noise": g["noise"]},
        loss="non_saturating")
    return state, {**d_metrics, **g_metrics, "loss": d_metrics["d_loss"]}

  def evaluate(self, state: TrainState, batch: dict[str, Array], rng: Array
               ) -> dict[str, Array]:
    """D's loss and mean scores on held-out real pairs vs pairs of the EMA denoiser."""
    d = self._draws(rng, batch["image"].astype(jnp.float32))
    cond = {"x_t": d["x_t"], "t": d["t"]}
    fake, _ = self.denoiser_apply(state.ema_params["generator"], {}, d["z"],
                                  {**cond, "noise": d["noise"]}, train=False)
    d_params = state.model_params["discriminator"]
    real_logits, _ = self.d_apply(d_params, {}, d["x_prev"], cond, train=False)
    fake_logits, _ = self.d_apply(d_params, {}, fake, cond, train=False)
    return {"loss": losses.discriminator_loss("non_saturating", real_logits, fake_logits),
            "real_score": jnp.mean(real_logits), "fake_score": jnp.mean(fake_logits)}

  def sample_with_params(self, g_params: PyTree, rng: Array, n: int) -> Array:
    """`n` images: x_{T-1} ~ N(0, I) (key fold_in(rng, T)), then for k = T-1..0 (scan step
    i = T-1-k, keys from fold_in(rng, i)) x0 = G(x_k, k, z), x_{k-1} ~ q(. | x_k, x0)."""
    shape = (n, *self.image_shape)
    x_init = jax.random.normal(jax.random.fold_in(rng, self.num_steps), shape)

    def step(x, i):
      k_z, k_noise = jax.random.split(jax.random.fold_in(rng, i))
      t = jnp.full((n,), self.num_steps - 1 - i, jnp.int32)
      x0 = self.denoise_x0(g_params, x, t, jax.random.normal(k_z, (n, self.z_dim)))
      return posterior_sample(self.schedule, x0, x, t, jax.random.normal(k_noise, shape)), None

    # Unrolled (T <= 8 bodies): XLA:CPU runs convolutions inside a while loop much slower.
    x, _ = jax.lax.scan(step, x_init, jnp.arange(self.num_steps), unroll=True)
    return x

  def sample(self, state: TrainState, rng: Array, n: int) -> Array:
    """`n` images in [-1, 1] of the EMA generator in T steps."""
    return self.sample_with_params(state.ema_params["generator"], rng, n)

  @property
  def sample_tag(self) -> str:
    return f"ddgan{self.num_steps}_ema" if self.ema_decay else f"ddgan{self.num_steps}"


def make_method(config: Any) -> DDGAN:
  """Translates a config (`diffusion` the schedule, `model` both networks, `gan` R1, `optim`
  for G, `optim_d` over it for D, `train` the EMA, `sample.steps` = T) into a `DDGAN`.

  Raises:
    ValueError: `sample.steps` differs from `diffusion.num_timesteps`, or a bad field.
  """
  dif, m, g = config.diffusion, config.model, config.gan
  steps = int(dif.num_timesteps)
  asked = config.sample.steps
  if asked is not None and int(asked) != steps:
    raise ValueError(f"gan.ddgan samples in exactly its T = diffusion.num_timesteps = {steps} "
                     f"denoising steps, one per step it was trained on; sample.steps={asked} "
                     f"is not possible: leave sample.steps at {steps} (train another model for "
                     "another T)")
  dtype = compute_dtype(m.dtype)
  unet = UNet(ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
              attn_resolutions=tuple(m.attn_resolutions), dropout=0.0,
              num_groups=m.num_groups, embedding_dim=m.z_emb_dim, dtype=dtype)
  generator = DDGANGenerator(unet=unet, z_emb_dim=m.z_emb_dim, n_mlp=m.n_mlp)
  discriminator = TimeConditionalDiscriminator(ch=m.d_ch, ch_mult=tuple(m.d_ch_mult),
                                               t_emb_dim=m.t_emb_dim,
                                               mbstd_group=m.mbstd_group, dtype=dtype)
  total = config.train.num_steps
  return DDGAN(generator=generator, discriminator=discriminator,
               schedule=ddgan_schedule(steps, beta_min=dif.beta_min, beta_max=dif.beta_max),
               tx_g=make_optimizer(config.optim, total_steps=total),
               tx_d=make_optimizer(discriminator_optim(config), total_steps=total),
               image_shape=(config.data.image_size, config.data.image_size,
                            config.data.channels),
               z_dim=m.z_dim, r1_gamma=g.r1_gamma, r1_every=g.r1_every,
               ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup)
