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

from jgen.nn.conditioning import conditions_from_batch
from jgen.nn.pixelcnn import PixelCNN
from jgen.ops.likelihoods import (logistic_mixture_log_prob, sample_logistic_mixture,
                                  split_mixture_params)
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState

__all__ = ["ConditionalPixelCNNMethod", "PixelCNNMethod", "make_method", "pixelcnn_from_config"]

PyTree = Any
Conditions = dict[str, jax.Array]


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
  """

  model: PixelCNN
  tx: optax.GradientTransformation
  image_shape: tuple[int, int, int]
  num_bins: int = 256
  ema_decay: float = 0.999
  ema_warmup: bool = True
  window_rows: bool = True

  def __post_init__(self):
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

  def loss_fn(self, params: PyTree, batch: dict[str, jax.Array], rng: jax.Array
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`(loss, metrics)`: the batch's mean bits/dim (also `bpd`, and `nll` in nats/image)."""
    log_p = self.log_prob(params, batch["image"], self.batch_conditions(batch), train=True,
                          dropout_rng=rng)
    loss = jnp.mean(self.bits_per_dim(log_p))
    return loss, {"loss": loss, "bpd": loss, "nll": -jnp.mean(log_p)}

  # ------------------------------------------------------------------ sampling

  def sample_images(self, params: PyTree, rng: jax.Array, n: int,
                    conditions: Conditions | None = None) -> jax.Array:
    """`n` images [n, H, W, C] in [-1, 1] on the `num_bins` grid, pixel by pixel in raster order.

    One `lax.scan` over the H W positions; step i runs the network on the canvas (pixels < i
    drawn, the rest zeros, which the output at i never reads), on its `receptive_rows` window
    ending at pixel i's row when `window_rows`, and draws pixel i with the key
    `fold_in(rng, i)`.
    """
    h, w, c = self.image_shape
    rows = min(h, self.model.receptive_rows) if self.window_rows else h

    def step(canvas, index):
      i, j = index // w, index % w
      top = jnp.clip(i - rows + 1, 0, h - rows)
      window = jax.lax.dynamic_slice_in_dim(canvas, top, rows, axis=1)
      out = self.model.apply({"params": params}, window, conditions, train=False)
      mix = split_mixture_params(out[:, i - top, j], c, self.model.num_mixtures)
      pixel = sample_logistic_mixture(jax.random.fold_in(rng, index), mix, self.num_bins)
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
  """A class-conditional `PixelCNNMethod`: the loop's `Conditional` method."""

  def __post_init__(self):
    super().__post_init__()
    if self.model.num_classes < 1:
      raise ValueError("a ConditionalPixelCNNMethod needs a class-conditional network "
                       "(model.num_classes > 0); use PixelCNNMethod for an unconditional one")

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
    """`n` images for `conditions["label"]` [n] (EMA parameters)."""
    return self.sample_images(state.ema_params, rng, n, {"label": conditions["label"]})

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images of the classes 0, 1, ..., num_classes - 1 in turn."""
    labels = jnp.asarray(np.arange(n) % self.num_classes, jnp.int32)
    return self.sample_conditional(state, rng, {"label": labels}, n)


def pixelcnn_from_config(model_config: Any, channels: int) -> PixelCNN:
  """The `PixelCNN` of a `config.model` block for images of `channels` channels."""
  m = model_config
  return PixelCNN(channels=channels, features=m.features, num_layers=m.num_layers,
                  kernel_size=m.kernel_size, num_mixtures=m.num_mixtures,
                  num_classes=int(m.num_classes), cond_dim=m.cond_dim, dropout=m.dropout,
                  dtype=jnp.dtype(m.dtype))


def make_method(config: Any) -> PixelCNNMethod:
  """The method of `config.method = "autoregressive.pixelcnn"` (conditional when
  `config.model.num_classes` > 0)."""
  d = config.data
  model = pixelcnn_from_config(config.model, d.channels)
  cls = ConditionalPixelCNNMethod if model.num_classes > 0 else PixelCNNMethod
  return cls(model=model, tx=make_optimizer(config.optim, total_steps=config.train.num_steps),
             image_shape=(d.image_size, d.image_size, d.channels),
             num_bins=config.pixelcnn.num_bins, window_rows=config.pixelcnn.window_rows,
             ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup)
