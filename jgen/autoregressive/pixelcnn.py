"""PixelCNN on pixels as a method of the loop: exact bits/dim of 8-bit images, raster sampling.

The model factorizes an image over its pixels in raster order,
p(x) = prod_i p(x_i | x_{<i}), each factor a discretized logistic mixture over the pixel's C
channels (`jgen.ops.likelihoods.LogisticMixture`, PixelCNN++'s linear channel
coefficients for RGB) whose parameters the gated PixelCNN (`jgen.nn.pixelcnn.PixelCNN`) computes
from x_{<i} in one pass. The loss is the exact bits/dim of the 8-bit data,
-log2 p(x) / (H W C): no dequantization, no bound.

Class conditioning (`model.num_classes` > 0) makes a `ConditionalPixelCNN`, the loop's
`Conditional` method: the batch's ``label`` enters every gated layer as a bias. Its `evaluate`
also reports ``bpd_marginal``, the exact bits/dim of p(x) = (1/N) sum_y p(x | y) with the label
summed out under a uniform prior (N forward passes), the figure comparable with unconditional
models; it exceeds ``bpd`` (of p(x | y_true)) by at most log2(N) / (H W C).

Sampling is one jitted `lax.scan` over the H W pixel positions; step i draws pixel i from its
mixture (`sample_logistic_mixture`: a Gumbel-max component, a logistic per channel, clipped and
quantized to the 256 levels). Each step recomputes only the rows pixel i needs: the network's
output at row i reads rows i - R + 1 .. i (`PixelCNN.receptive_rows`; R = 16 for the digits
and MNIST networks), so the step runs the network on the R-row window of the canvas that ends at
row i (the top R rows while i < R - 1), which gives exactly the full-image output at pixel i (tests
check the samples agree) at R / H of the cost. Rows rather than a per-layer cache of both streams
(the analogue of a transformer's key/value cache) because a cache would need every layer's
streams stored and updated per pixel, a second implementation of the network, while the window
is the same network on a smaller input; the cost is H W forward passes of an R-row image per
batch. `window_rows=False` reruns the whole image per step (the reference);
`benchmarks/pixelcnn_sampling.py` measures images/s of both.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.autoregressive.sampling import sample_logits
from jgen.nn.conditioning import conditions_from_batch, drop_conditions
from jgen.nn.pixelcnn import PixelCNN
from jgen.ops.likelihoods import (LogisticMixture, logistic_mixture_channel_log_probs,
                                  logistic_mixture_log_prob, sample_logistic_mixture,
                                  split_mixture_params)
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState

__all__ = ["ConditionalPixelCNNMethod", "PixelCNNMethod", "make_method", "pixelcnn_from_config",
           "sample_pixel_bins"]

PyTree = Any
Conditions = dict[str, jax.Array]


def sample_pixel_bins(rng: jax.Array, mix: LogisticMixture, num_bins: int = 256, *,
                      null_mix: LogisticMixture | None = None, guidance_scale: float = 1.0,
                      temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
                      ) -> jax.Array:
  """One draw of each pixel [..., C] from reshaped per-bin categoricals, channel by channel.

  Channel c's bin logits are the mixture's exact conditional given the channels drawn before
  it (`logistic_mixture_channel_log_probs`), l_c(b) = log P(x_c = b | x_{<c}), or with the
  null condition's mixture `null_mix` and classifier-free guidance at scale w,
  l_c(b) = log P_u(b | x_{<c}) + w (log P(b | x_{<c}) - log P_u(b | x_{<c}))
  (w = 1: none, the convention of `jgen.diffusion.guidance`); then the token filters of
  `jgen.autoregressive.sampling` (temperature, top-k, top-p over the bins; T = 0: the most
  probable bin) and a categorical draw with the key ``fold_in(rng, c)``. With w = 1, T = 1
  and no truncation the draws follow `mix` exactly, the distribution that
  `sample_logistic_mixture` draws from by inverting the logistic (the sampler of that case:
  no per-bin table).
  """
  if null_mix is None and guidance_scale != 1.0:
    raise ValueError(f"guidance_scale={guidance_scale} needs the null condition's mixture "
                     "(null_mix)")
  centres = jnp.linspace(-1.0, 1.0, num_bins, dtype=mix.means.dtype)
  x = jnp.zeros(mix.means.shape[:-1], mix.means.dtype)                       # [..., C]
  for c in range(mix.means.shape[-2]):
    logits = logistic_mixture_channel_log_probs(mix, x, c, num_bins)
    if null_mix is not None:
      base = logistic_mixture_channel_log_probs(null_mix, x, c, num_bins)
      logits = base + guidance_scale * (logits - base)
    b = sample_logits(jax.random.fold_in(rng, c), logits, temperature=temperature, top_k=top_k,
                      top_p=top_p)
    x = x.at[..., c].set(centres[b])
  return x


@dataclasses.dataclass(frozen=True, eq=False)
class PixelCNNMethod:
  """An unconditional PixelCNN trained by maximum likelihood (see the module docstring).

  Attributes:
    model: the network, built for `image_shape`'s channels.
    tx: optimizer.
    image_shape: (H, W, C) of the data (the sampler's canvas).
    num_bins: levels per channel of the data (256: 8-bit images).
    ema_decay, ema_warmup: EMA of the parameters used by `evaluate` and `sample`.
    window_rows: sample with the network on the `receptive_rows` window ending at the current
      row (exact, cheaper); False reruns the whole image per pixel.
    temperature, top_k, top_p: the token filters of each channel's per-bin categorical
      (`sample_pixel_bins`; T = 1, 0, 1: the model's own distribution, T = 0: the most
      probable bin).
  """

  model: PixelCNN
  tx: optax.GradientTransformation
  image_shape: tuple[int, int, int]
  num_bins: int = 256
  ema_decay: float = 0.999
  ema_warmup: bool = True
  window_rows: bool = True
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if self.temperature < 0 or self.top_k < 0 or not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"sample.temperature={self.temperature}, top_k={self.top_k}, "
                       f"top_p={self.top_p}: use T >= 0 (1: the model's own, 0: the most "
                       "probable bin), top_k >= 0 (0: off) and top_p in (0, 1] (1: off)")
    if len(self.image_shape) != 3 or min(self.image_shape) < 1:
      raise ValueError(f"image_shape must be (H, W, C), got {self.image_shape}")
    if self.image_shape[-1] != self.model.channels:
      raise ValueError(f"the data have {self.image_shape[-1]} channels but the PixelCNN is built "
                       f"for {self.model.channels}; set model.channels = data.channels")
    if self.num_bins < 2:
      raise ValueError(f"num_bins must be >= 2 (256 for 8-bit data), got {self.num_bins}")

  @property
  def num_dims(self) -> int:
    return math.prod(self.image_shape)

  def batch_conditions(self, batch: dict[str, jax.Array]) -> Conditions | None:
    """The model's conditions of a batch (None when unconditional)."""
    keys = self.model.condition_keys
    return conditions_from_batch(batch, keys) if keys else None

  # ------------------------------------------------------------------ likelihood

  def log_prob(self, params: PyTree, x: jax.Array, conditions: Conditions | None = None, *,
               train: bool = False, dropout_rng: jax.Array | None = None) -> jax.Array:
    """log p(x) in nats per image [B] of images x [B, H, W, C] on the `num_bins` grid."""
    if tuple(x.shape[1:]) != tuple(self.image_shape):
      raise ValueError(f"the PixelCNN method is built for images of shape {self.image_shape}, "
                       f"got {tuple(x.shape[1:])}")
    rngs = {"dropout": dropout_rng} if train and dropout_rng is not None else None
    out = self.model.apply({"params": params}, x, conditions, train=train, rngs=rngs)
    mix = split_mixture_params(out, self.model.channels, self.model.num_mixtures)
    return jnp.sum(logistic_mixture_log_prob(x, mix, self.num_bins), axis=(1, 2))

  def bits_per_dim(self, log_p: jax.Array) -> jax.Array:
    """-log2 p(x) / (H W C) from log p(x) in nats."""
    return -log_p / (self.num_dims * math.log(2.0))

  def training_conditions(self, batch: dict[str, jax.Array], rng: jax.Array
                          ) -> Conditions | None:
    """The conditions the loss sees (the batch's; a conditional method may drop them)."""
    del rng
    return self.batch_conditions(batch)

  def loss_fn(self, params: PyTree, batch: dict[str, jax.Array], rng: jax.Array
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`(loss, metrics)`: the batch's mean bits/dim (also `bpd`, and `nll` in nats/image)."""
    drop_rng = jax.random.fold_in(rng, 1)
    log_p = self.log_prob(params, batch["image"], self.training_conditions(batch, drop_rng),
                          train=True, dropout_rng=rng)
    loss = jnp.mean(self.bits_per_dim(log_p))
    return loss, {"loss": loss, "bpd": loss, "nll": -jnp.mean(log_p)}

  # ------------------------------------------------------------------ sampling

  def sample_images(self, params: PyTree, rng: jax.Array, n: int,
                    conditions: Conditions | None = None, *, guidance_scale: float = 1.0
                    ) -> jax.Array:
    """`n` images [n, H, W, C] in [-1, 1] on the `num_bins` grid, pixel by pixel in raster order.

    One `lax.scan` over the H W positions; step i runs the network on the canvas (pixels < i
    drawn, the rest zeros, which the output at i never reads), on its `receptive_rows` window
    ending at pixel i's row when `window_rows`, and draws pixel i with the key
    `fold_in(rng, i)`: from the model's mixture (`sample_logistic_mixture`) when nothing
    reshapes it, otherwise from the per-bin categoricals of `sample_pixel_bins` with the
    method's `temperature`, `top_k`, `top_p` and classifier-free guidance scale
    `guidance_scale` (w != 1 runs the network on the canvas twice per step, with the labels
    and with the null class).
    """
    h, w, c = self.image_shape
    rows = min(h, self.model.receptive_rows) if self.window_rows else h
    guided = guidance_scale != 1.0
    if guided:
      if not conditions or not self.model.null_class:
        raise ValueError(f"guidance_scale={guidance_scale} needs a class-conditional PixelCNN "
                         "trained with a null class (model.null_class=True, "
                         "pixelcnn.cond_drop_prob > 0); or set sample.guidance_scale=1.0")
      null = jnp.full_like(conditions["label"], self.model.num_classes)
      net_conditions = {"label": jnp.concatenate([conditions["label"], null])}
    else:
      net_conditions = conditions

    filters = dict(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)

    def draw(key, out):
      mix = split_mixture_params(out, c, self.model.num_mixtures)
      if not guided and filters == dict(temperature=1.0, top_k=0, top_p=1.0):
        return sample_logistic_mixture(key, mix, self.num_bins)
      if not guided:
        return sample_pixel_bins(key, mix, self.num_bins, **filters)
      given, null_mix = (jax.tree.map(lambda a: a[:n], mix), jax.tree.map(lambda a: a[n:], mix))
      return sample_pixel_bins(key, given, self.num_bins, null_mix=null_mix,
                               guidance_scale=guidance_scale, **filters)

    def step(canvas, index):
      i, j = index // w, index % w
      top = jnp.clip(i - rows + 1, 0, h - rows)
      window = jax.lax.dynamic_slice_in_dim(canvas, top, rows, axis=1)
      if guided:
        window = jnp.concatenate([window, window])
      out = self.model.apply({"params": params}, window, net_conditions, train=False)
      pixel = draw(jax.random.fold_in(rng, index), out[:, i - top, j])
      return canvas.at[:, i, j].set(pixel), None

    canvas, _ = jax.lax.scan(step, jnp.zeros((n, h, w, c), jnp.float32), jnp.arange(h * w))
    return canvas

  # ------------------------------------------------------------------ the loop's contract

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    params_rng, state_rng = jax.random.split(rng)
    x = batch["image"][:1]
    conditions = ({"label": jnp.zeros((1,), jnp.int32)} if self.model.num_classes > 0
                  else None)
    params = self.model.init(params_rng, x, conditions, train=False)["params"]
    return TrainState.create(params=params, tx=self.tx, rng=state_rng, ema_decay=self.ema_decay,
                             ema_warmup=self.ema_warmup)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return state.gradient_step(self.loss_fn, batch, rng)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """Exact bits/dim (and nats per image) of a held-out batch under the EMA parameters."""
    del rng
    log_p = self.log_prob(state.ema_params, batch["image"], self.batch_conditions(batch))
    bpd = jnp.mean(self.bits_per_dim(log_p))
    return {"loss": bpd, "bpd": bpd, "nll": -jnp.mean(log_p)}

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images in [-1, 1] drawn with the EMA parameters."""
    return self.sample_images(state.ema_params, rng, n)

  @property
  def sample_tag(self) -> str:
    return "pixelcnn"


@dataclasses.dataclass(frozen=True, eq=False)
class ConditionalPixelCNNMethod(PixelCNNMethod):
  """A class-conditional `PixelCNNMethod`: the loop's `Conditional` method.

  Classifier-free guidance (Ho & Salimans 2022, carried to autoregressive models as in
  LlamaGen, Sun et al. 2024): trained with the label replaced by the null class with
  probability `cond_drop_prob` (`jgen.nn.conditioning.drop_conditions`; the network needs
  `null_class`), one network gives both P(x_i | x_{<i}, y) and P(x_i | x_{<i}), and sampling at
  scale `guidance_scale` w draws each pixel's channels from
  P_u(b)^(1 - w) P(b | y)^w (normalized over the bins; `sample_pixel_bins`).

  Attributes:
    cond_drop_prob: probability of training an example with the null class.
    guidance_scale: w of `sample` and `sample_conditional` (1: the conditional model).
  """

  cond_drop_prob: float = 0.0
  guidance_scale: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    if self.model.num_classes < 1:
      raise ValueError("a ConditionalPixelCNNMethod needs a class-conditional network "
                       "(model.num_classes > 0); use PixelCNNMethod for an unconditional one")
    if not 0.0 <= self.cond_drop_prob < 1.0:
      raise ValueError(f"cond_drop_prob must lie in [0, 1), got {self.cond_drop_prob}")
    if (self.cond_drop_prob > 0 or self.guidance_scale != 1.0) and not self.model.null_class:
      raise ValueError(f"cond_drop_prob={self.cond_drop_prob}, guidance_scale="
                       f"{self.guidance_scale}: classifier-free guidance needs the null class; "
                       "set model.null_class=True (and pixelcnn.cond_drop_prob > 0 to train it)")

  def training_conditions(self, batch: dict[str, jax.Array], rng: jax.Array
                          ) -> Conditions | None:
    """The batch's labels, each replaced by the null class with probability `cond_drop_prob`."""
    conditions = self.batch_conditions(batch)
    if self.cond_drop_prob == 0:
      return conditions
    dropped = drop_conditions(conditions, rng, self.cond_drop_prob,
                              num_classes=self.model.num_classes)
    return {"label": dropped["label"]}

  @property
  def num_classes(self) -> int:
    return self.model.num_classes

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """`bpd` of p(x | true label) and `bpd_marginal` of p(x) = mean_y p(x | y), both exact."""
    metrics = super().evaluate(state, batch, rng)
    x = batch["image"]

    def given(label):
      labels = jnp.full((x.shape[0],), label, jnp.int32)
      return self.log_prob(state.ema_params, x, {"label": labels})

    log_p_y = jax.lax.map(given, jnp.arange(self.num_classes))           # [N, B]
    log_p = jax.nn.logsumexp(log_p_y, axis=0) - math.log(self.num_classes)
    return {**metrics, "bpd_marginal": jnp.mean(self.bits_per_dim(log_p))}

  def sample_conditional(self, state: TrainState, rng: jax.Array, conditions: Conditions,
                         n: int) -> jax.Array:
    """`n` images for `conditions["label"]` [n] (EMA parameters, `guidance_scale`)."""
    return self.sample_images(state.ema_params, rng, n, {"label": conditions["label"]},
                              guidance_scale=self.guidance_scale)

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images of the classes 0, 1, ..., num_classes - 1 in turn."""
    labels = jnp.asarray(np.arange(n) % self.num_classes, jnp.int32)
    return self.sample_conditional(state, rng, {"label": labels}, n)


def pixelcnn_from_config(model_config: Any, channels: int) -> PixelCNN:
  """The `PixelCNN` of a `config.model` block for images of `channels` channels."""
  m = model_config
  return PixelCNN(channels=channels, features=m.features, num_layers=m.num_layers,
                  kernel_size=m.kernel_size, num_mixtures=m.num_mixtures,
                  num_classes=int(m.num_classes), null_class=bool(m.null_class),
                  cond_dim=m.cond_dim, dropout=m.dropout,
                  dtype=jnp.dtype(m.dtype))


def make_method(config: Any) -> PixelCNNMethod:
  """The method of `config.method = "autoregressive.pixelcnn"` (conditional when
  `config.model.num_classes` > 0)."""
  d = config.data
  model = pixelcnn_from_config(config.model, d.channels)
  p, s = config.pixelcnn, config.sample
  common = dict(model=model, tx=make_optimizer(config.optim, total_steps=config.train.num_steps),
                image_shape=(d.image_size, d.image_size, d.channels), num_bins=p.num_bins,
                window_rows=p.window_rows, ema_decay=config.train.ema_decay,
                ema_warmup=config.train.ema_warmup, temperature=float(s.temperature),
                top_k=int(s.top_k), top_p=float(s.top_p))
  if model.num_classes > 0:
    return ConditionalPixelCNNMethod(**common, cond_drop_prob=float(p.cond_drop_prob),
                                     guidance_scale=float(s.guidance_scale))
  if s.guidance_scale != 1.0 or p.cond_drop_prob > 0:
    raise ValueError(f"sample.guidance_scale={s.guidance_scale}, pixelcnn.cond_drop_prob="
                     f"{p.cond_drop_prob}: classifier-free guidance needs a class-conditional "
                     "PixelCNN (model.num_classes > 0)")
  return PixelCNNMethod(**common)
