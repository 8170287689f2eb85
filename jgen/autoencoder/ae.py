"""Deterministic autoencoder (MSE or MAE reconstruction) and the denoising autoencoder.

`config.method = "autoencoder.ae"`; the denoising AE (Vincent et al. 2008) is the same method
with `config.ae.corruption` = 'gaussian' (additive N(0, level^2) noise) or 'dropout' (each
pixel set to -1, the data minimum, with probability `level`: masking noise); the loss compares
the reconstruction of the corrupted input with the clean image. `config.method =
"autoencoder.dae"` is a shortcut that insists on a corruption.

An autoencoder has no prior to sample: it is `jgen.train.Reconstructs`, not `Samples`. Its
grids (`reconstructions`) show held-out inputs next to their reconstructions, sample metrics
(FID ...) are refused, and reconstruction FID (`--config.eval.metrics=rfid`, through
`reconstruct_images`) is offered instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.autoencoder.common import (interleave, load_holdout, make_networks,
                                     reconstruction_error)
from jgen.nn.autoencoder import Decoder, Encoder, init_encoder_decoder, latent_shape
from jgen.ops.image import psnr
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState

CORRUPTIONS = ("none", "gaussian", "dropout")

__all__ = ["Autoencoder", "CORRUPTIONS", "corrupt", "make_method"]


def corrupt(x: jax.Array, rng: jax.Array, kind: str, level: float) -> jax.Array:
  """Corrupts images in [-1, 1]: 'none', 'gaussian' (std `level`) or 'dropout' (rate `level`)."""
  if kind == "none":
    return x
  if kind == "gaussian":
    return x + level * jax.random.normal(rng, x.shape, x.dtype)
  if kind == "dropout":
    keep = jax.random.bernoulli(rng, 1.0 - level, x.shape)
    return jnp.where(keep, x, -1.0)
  raise ValueError(f"unknown corruption {kind!r}; choose one of {CORRUPTIONS}")


@dataclasses.dataclass(frozen=True, eq=False)
class Autoencoder:
  """x -> Encoder -> z -> Decoder -> x_hat, trained on a reconstruction loss.

  Attributes:
    encoder: `encoder.apply({'params': p}, x, train=...) -> z`.
    decoder: `decoder.apply({'params': p}, z, train=...) -> x_hat` (C channels).
    tx: optimizer.
    holdout: held-out images `[M, H, W, C]` in [-1, 1] that `reconstructions` shows.
    loss_type: 'mse' or 'mae'.
    corruption: 'none' (plain AE), 'gaussian' or 'dropout' (denoising AE).
    corruption_level: noise std or drop rate.
    ema_decay, ema_warmup: EMA of the parameters used by `evaluate` and `reconstructions`.
  """

  encoder: Encoder
  decoder: Decoder
  tx: optax.GradientTransformation
  holdout: np.ndarray
  loss_type: str = "mse"
  corruption: str = "none"
  corruption_level: float = 0.0
  ema_decay: float = 0.999
  ema_warmup: bool = True

  def __post_init__(self):
    if self.corruption not in CORRUPTIONS:
      raise ValueError(f"unknown corruption {self.corruption!r}; choose one of {CORRUPTIONS}")
    if self.loss_type not in ("mse", "mae"):
      raise ValueError(f"unknown loss {self.loss_type!r}; choose 'mse' or 'mae'")

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    params_rng, state_rng = jax.random.split(rng)
    x = batch["image"][:1]
    z = jnp.zeros((1, *latent_shape(self.encoder, x.shape[1])), jnp.float32)
    params = init_encoder_decoder(params_rng, self.encoder, self.decoder, x, z)
    return TrainState.create(params=params, tx=self.tx, rng=state_rng,
                             ema_decay=self.ema_decay, ema_warmup=self.ema_warmup)

  def encode(self, params, x: jax.Array, *, train: bool = False,
             rng: jax.Array | None = None) -> jax.Array:
    rngs = {"dropout": rng} if train else None
    return self.encoder.apply({"params": params["encoder"]}, x, train=train, rngs=rngs)

  def decode(self, params, z: jax.Array, *, train: bool = False,
             rng: jax.Array | None = None) -> jax.Array:
    rngs = {"dropout": rng} if train else None
    return self.decoder.apply({"params": params["decoder"]}, z, train=train, rngs=rngs)

  def reconstruct(self, params, x: jax.Array, *, train: bool = False,
                  rng: jax.Array | None = None) -> jax.Array:
    enc_rng, dec_rng = jax.random.split(rng) if rng is not None else (None, None)
    return self.decode(params, self.encode(params, x, train=train, rng=enc_rng), train=train,
                       rng=dec_rng)

  def loss_fn(self, params, batch: dict[str, jax.Array], rng: jax.Array, *, train: bool = True
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`(loss, metrics)`: reconstruction of the corrupted batch against the clean batch."""
    noise_rng, net_rng = jax.random.split(rng)
    x = batch["image"]
    x_in = corrupt(x, noise_rng, self.corruption, self.corruption_level)
    x_hat = self.reconstruct(params, x_in, train=train, rng=net_rng)
    loss = jnp.mean(reconstruction_error(x_hat, x, self.loss_type))
    return loss, {"loss": loss, "mse": jnp.mean(reconstruction_error(x_hat, x, "mse")),
                  "psnr": jnp.mean(psnr(x_hat, x))}

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return state.gradient_step(self.loss_fn, batch, rng)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """Reconstruction MSE/PSNR of the EMA params from (for a DAE: corrupted) held-out images."""
    _, metrics = self.loss_fn(state.ema_params, batch, rng, train=False)
    return metrics

  def reconstruct_images(self, state: TrainState, images: jax.Array) -> jax.Array:
    """Reconstructions in [-1, 1] of (uncorrupted) images in [-1, 1], EMA params: what
    reconstruction FID scores."""
    return jnp.clip(self.reconstruct(state.ema_params, images), -1.0, 1.0)

  def reconstructions(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """Held-out inputs (corrupted for a DAE) interleaved with their reconstructions, cycled to
    `n` images: a picture of the model, not samples."""
    x = jnp.asarray(self.holdout)
    x_in = jnp.clip(corrupt(x, rng, self.corruption, self.corruption_level), -1.0, 1.0)
    return interleave(x_in, self.reconstruct_images(state, x_in), n)

  @property
  def sample_tag(self) -> str:
    return "reconstructions" if self.corruption == "none" else f"denoised_{self.corruption}"


def make_method(config: Any) -> Autoencoder:
  """Translates an experiment config (`model`, `ae`, `optim`, `train`) into an `Autoencoder`."""
  a = config.ae
  corruption = a.corruption
  encoder, decoder = make_networks(config, encoder_features=config.model.latent_dim,
                                   decoder_channels=config.data.channels)
  return Autoencoder(encoder=encoder, decoder=decoder,
                     tx=make_optimizer(config.optim, total_steps=config.train.num_steps),
                     holdout=load_holdout(config, max(1, config.sample.num // 2)),
                     loss_type=a.loss, corruption=corruption, corruption_level=a.corruption_level,
                     ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup)
