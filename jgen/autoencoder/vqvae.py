"""VQ-VAE (van den Oord et al. 2017) as a method of the loop: `config.method =
"autoencoder.vqvae"`.

Encoder -> spatial latent `[B, r, r, D]` -> nearest of K codes (straight-through) -> decoder.
Loss: MSE reconstruction + codebook loss + beta * commitment loss (beta = 0.25), or with
`vq.ema=True` the codebook follows EMA statistics (decay 0.99, Laplace smoothing) instead of
the codebook loss. Dead codes are re-seeded every `vq.restart_every` steps.

Where the arrays live (the rule of `jgen.train.state`: `params` is the Flax `params`
collection, everything else is `model_state`):

    params = {"encoder": ..., "decoder": ..., "codebook": [K, D]}
    model_state = {"vq_stats": {"counts": [K], "sums": [K, D]}}

The codebook is the decoder's input weights and stays in `params` (and so in the parameter EMA
that `evaluate` and `reconstructions` use); with `vq.ema=True` it follows the EMA statistics
instead of its gradient, so `masked_optimizer` gives it `optax.set_to_zero()`. The statistics are
non-gradient state: never optimized, never averaged, checkpointed and resumed with the state's
`model_state`. `train_step` writes the new statistics and codebook by hand, then applies the
gradients. The running counts are kept in both modes: they measure code usage and find dead
codes.

A VQ-VAE is `jgen.train.Reconstructs`, not `Samples` (a prior over its codes samples:
`jgen.autoregressive.code_transformer`): its grids (`reconstructions`) show held-out inputs next
to their reconstructions, sample metrics (FID ...) are refused, and `reconstruct_images` serves
reconstruction FID (`--config.eval.metrics=rfid`) instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.ops import quantizer as vq
from jgen.autoencoder.common import (interleave, load_holdout, make_networks,
                                     reconstruction_error)
from jgen.nn.autoencoder import Decoder, Encoder, latent_shape
from jgen.ops.image import psnr
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState

__all__ = ["VQVAE", "make_method", "masked_optimizer"]


def masked_optimizer(tx: optax.GradientTransformation, *, learn_codebook: bool
                     ) -> optax.GradientTransformation:
  """`tx` on every parameter but the codebook, which `tx` updates only if `learn_codebook`
  (otherwise the EMA statistics set it: `optax.set_to_zero()`)."""
  def labels(params):
    def label(path, _):
      return "frozen" if path[0].key == "codebook" and not learn_codebook else "train"
    return jax.tree_util.tree_map_with_path(label, params)
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


@dataclasses.dataclass(frozen=True, eq=False)
class VQVAE:
  """A VQ-VAE; every function is pure in `params`.

  Attributes:
    encoder: spatial encoder with `code_dim` output channels.
    decoder: spatial decoder from `[B, r, r, code_dim]` to C channels.
    tx: optimizer (already masked, see `masked_optimizer`).
    holdout: held-out images that `reconstructions` shows.
    num_codes: K.
    beta: commitment weight.
    ema: EMA codebook updates instead of the codebook loss.
    decay: EMA decay of the code statistics (both modes: usage counts).
    epsilon: Laplace smoothing.
    restart_every: re-seed dead codes every this many steps (0: never).
    restart_threshold: dead = running count below this fraction of the mean count.
    ema_decay, ema_warmup: EMA of the parameters used by `evaluate` and `reconstructions`.
  """

  encoder: Encoder
  decoder: Decoder
  tx: optax.GradientTransformation
  holdout: np.ndarray
  num_codes: int = 512
  beta: float = 0.25
  ema: bool = False
  decay: float = 0.99
  epsilon: float = 1e-5
  restart_every: int = 100
  restart_threshold: float = 0.03
  ema_decay: float = 0.999
  ema_warmup: bool = True

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    """Networks at random; codebook = random encoder outputs of `batch` (data init)."""
    enc_rng, dec_rng, code_rng, state_rng = jax.random.split(rng, 4)
    x = batch["image"]
    enc = self.encoder.init(enc_rng, x[:1], train=False)["params"]
    z = jnp.zeros((1, *latent_shape(self.encoder, x.shape[1])), jnp.float32)
    dec = self.decoder.init(dec_rng, z, train=False)["params"]
    flat = self.encoder.apply({"params": enc}, x, train=False).reshape(-1, z.shape[-1])
    pick_rng, noise_rng = jax.random.split(code_rng)
    pick = jax.random.randint(pick_rng, (self.num_codes,), 0, flat.shape[0])
    codebook = flat[pick] + 0.01 * vq.init_codebook(noise_rng, self.num_codes, z.shape[-1])
    stats = {"counts": jnp.ones((self.num_codes,), jnp.float32), "sums": codebook}
    return TrainState.create(params={"encoder": enc, "decoder": dec, "codebook": codebook},
                             tx=self.tx, rng=state_rng, ema_decay=self.ema_decay,
                             ema_warmup=self.ema_warmup, model_state={"vq_stats": stats})

  def encode(self, params, x: jax.Array, *, train: bool = False,
             rng: jax.Array | None = None) -> jax.Array:
    """Continuous latents `[B, r, r, D]` before quantization."""
    rngs = {"dropout": rng} if train else None
    return self.encoder.apply({"params": params["encoder"]}, x, train=train, rngs=rngs)

  def decode(self, params, z_q: jax.Array, *, train: bool = False,
             rng: jax.Array | None = None) -> jax.Array:
    rngs = {"dropout": rng} if train else None
    return self.decoder.apply({"params": params["decoder"]}, z_q, train=train, rngs=rngs)

  @property
  def codes_subtree(self) -> str:
    """`encode_indices` / `decode_indices` take the whole parameter tree."""
    return ""

  def encode_indices(self, params, x: jax.Array) -> jax.Array:
    """Code indices `[B, r, r]` of images (the discrete latents a prior is trained on)."""
    return vq.nearest_code(self.encode(params, x), params["codebook"])

  def decode_indices(self, params, indices: jax.Array) -> jax.Array:
    """Images from code indices `[B, r, r]`."""
    return self.decode(params, jnp.take(params["codebook"], indices, axis=0))

  def forward(self, params, x: jax.Array, *, train: bool = False,
              rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array, vq.QuantizerOutput]:
    """`(x_hat, z, quantizer output)`."""
    enc_rng, dec_rng = jax.random.split(rng) if rng is not None else (None, None)
    z = self.encode(params, x, train=train, rng=enc_rng)
    q = vq.quantize(z, params["codebook"])
    return self.decode(params, q.z_q, train=train, rng=dec_rng), z, q

  def loss_fn(self, params, batch: dict[str, jax.Array], rng: jax.Array, *, train: bool = True
              ) -> tuple[jax.Array, tuple[dict[str, jax.Array], jax.Array, jax.Array]]:
    """`(loss, (metrics, z, indices))`."""
    x = batch["image"]
    x_hat, z, q = self.forward(params, x, train=train, rng=rng)
    mse = jnp.mean(reconstruction_error(x_hat, x, "mse"))
    loss = mse + self.beta * q.commitment_loss
    if not self.ema:
      loss = loss + q.codebook_loss
    perplexity, used = vq.codebook_perplexity(q.indices, self.num_codes)
    metrics = {"loss": loss, "mse": mse, "psnr": jnp.mean(psnr(x_hat, x)),
               "codebook_loss": q.codebook_loss, "commitment_loss": q.commitment_loss,
               "perplexity": perplexity, "codes_used": used}
    return loss, (metrics, z, q.indices)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    loss_rng, restart_rng = jax.random.split(rng)
    grads, (metrics, z, indices) = state.grad(self.loss_fn, batch, loss_rng)
    stats = state.model_state["vq_stats"]
    counts, sums, ema_codebook = vq.ema_codebook_update(
        stats["counts"], stats["sums"], z, indices, decay=self.decay, epsilon=self.epsilon)
    codebook = ema_codebook if self.ema else state.params["codebook"]
    active = (self.restart_every > 0) & ((state.step + 1) % max(self.restart_every, 1) == 0)
    codebook, counts, sums, restarted = vq.restart_dead_codes(
        restart_rng, codebook, counts, sums, z, threshold=self.restart_threshold, active=active)
    state = state.replace(params={**state.params, "codebook": codebook},
                          model_state={**state.model_state,
                                       "vq_stats": {"counts": counts, "sums": sums}})
    metrics = {**metrics, "grad_norm": optax.global_norm(grads),
               "restarted": restarted.astype(jnp.float32)}
    return state.apply_gradients(grads), metrics

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """Reconstruction MSE/PSNR and codebook perplexity/usage of the EMA params."""
    _, (metrics, _, _) = self.loss_fn(state.ema_params, batch, rng, train=False)
    return metrics

  def reconstruct_images(self, state: TrainState, images: jax.Array) -> jax.Array:
    """Reconstructions in [-1, 1] of images in [-1, 1] (EMA params): reconstruction FID."""
    x_hat, _, _ = self.forward(state.ema_params, images)
    return jnp.clip(x_hat, -1.0, 1.0)

  def reconstructions(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """Held-out inputs interleaved with their reconstructions, cycled to `n` images."""
    del rng
    x = jnp.asarray(self.holdout)
    return interleave(x, self.reconstruct_images(state, x), n)

  @property
  def sample_tag(self) -> str:
    return "reconstructions"


def make_method(config: Any) -> VQVAE:
  """Translates an experiment config (`model`, `vq`, `optim`, `train`) into a `VQVAE`."""
  if not config.model.spatial:
    raise ValueError("VQ-VAE quantizes a spatial latent: set config.model.spatial=True")
  v = config.vq
  encoder, decoder = make_networks(config, encoder_features=v.code_dim,
                                   decoder_channels=config.data.channels)
  tx = make_optimizer(config.optim, total_steps=config.train.num_steps)
  return VQVAE(encoder=encoder, decoder=decoder,
               tx=masked_optimizer(tx, learn_codebook=not v.ema),
               holdout=load_holdout(config, max(1, config.sample.num // 2)),
               num_codes=v.num_codes, beta=v.beta, ema=v.ema, decay=v.decay,
               epsilon=v.epsilon, restart_every=v.restart_every,
               restart_threshold=v.restart_threshold, ema_decay=config.train.ema_decay,
               ema_warmup=config.train.ema_warmup)
