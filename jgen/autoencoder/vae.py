"""Variational autoencoder (Kingma & Welling 2014) with an importance-weighted evaluation bound
(Burda et al. 2016). `config.method = "autoencoder.vae"`.

The posterior q(z|x) is a diagonal Gaussian (the encoder outputs its mean and log-variance; a
vector or a spatial map), the prior N(0, I), and the decoder p(x|z) one of
`likelihoods.LIKELIHOODS`: 'bernoulli' (on stochastically binarized images; the encoder sees
the binarized image), 'gaussian' (continuous density, per-pixel learned scale) or 'logistic'
(discretized logistic over 256 levels, per-pixel learned scale: a true likelihood of 8-bit
images). The loss is -(E_q log p(x|z) - beta_t KL(q || p)) with the analytic KL and one
reparameterized sample; beta_t ramps linearly from 0 to beta over `kl_warmup_steps`.
Metrics are nats per image (`elbo`, `kl`, `rec`) and bits per dimension (`bpd`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jgen.autoencoder.common import make_networks
from jgen.nn.autoencoder import Decoder, Encoder, init_encoder_decoder, latent_shape
from jgen.ops import likelihoods as lik
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState

__all__ = ["VAE", "iwae_bound", "kl_weight", "lerp", "make_method"]

MIN_LOG_SCALE = -7.0


def kl_weight(step: jax.Array, beta: float, warmup_steps: int) -> jax.Array:
  """beta * min(1, step / warmup_steps) (beta from the start when warmup_steps is 0)."""
  if warmup_steps <= 0:
    return jnp.asarray(beta, jnp.float32)
  return beta * jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)


def iwae_bound(log_weights: jax.Array) -> jax.Array:
  """log (1/k) sum_i exp(log_weights[i]) over the leading axis of k importance samples."""
  return jax.nn.logsumexp(log_weights, axis=0) - math.log(log_weights.shape[0])


def lerp(z_a: jax.Array, z_b: jax.Array, steps: int) -> jax.Array:
  """`steps` latents on the line from z_a to z_b (both ends included), `[steps, ...]`."""
  t = jnp.linspace(0.0, 1.0, steps).reshape(-1, *([1] * z_a.ndim))
  return (1.0 - t) * z_a[None] + t * z_b[None]


@dataclasses.dataclass(frozen=True, eq=False)
class VAE:
  """A VAE as a method of the loop; every function is pure in `params`.

  Attributes:
    encoder: outputs 2 * latent features (mean, log-variance) on the last axis.
    decoder: outputs C logits ('bernoulli') or 2C channels (mean, log-scale).
    tx: optimizer.
    likelihood: 'bernoulli', 'gaussian' or 'logistic'.
    beta: KL weight after warm-up.
    kl_warmup_steps: steps of the linear KL warm-up (0: none).
    iwae_k: importance samples of the log-likelihood estimate in `evaluate`.
    ema_decay, ema_warmup: EMA of the parameters used by `evaluate` and `sample`.
  """

  encoder: Encoder
  decoder: Decoder
  tx: optax.GradientTransformation
  likelihood: str = "bernoulli"
  beta: float = 1.0
  kl_warmup_steps: int = 0
  iwae_k: int = 100
  ema_decay: float = 0.999
  ema_warmup: bool = True

  def __post_init__(self):
    if self.likelihood not in lik.LIKELIHOODS:
      raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of "
                       f"{lik.LIKELIHOODS}")

  def latent_shape(self, image_size: int) -> tuple[int, ...]:
    shape = latent_shape(self.encoder, image_size)
    return (*shape[:-1], shape[-1] // 2)

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    params_rng, state_rng = jax.random.split(rng)
    x = batch["image"][:1]
    z = jnp.zeros((1, *self.latent_shape(x.shape[1])), jnp.float32)
    params = init_encoder_decoder(params_rng, self.encoder, self.decoder, x, z)
    return TrainState.create(params=params, tx=self.tx, rng=state_rng,
                             ema_decay=self.ema_decay, ema_warmup=self.ema_warmup)

  # ------------------------------------------------------------------ the model's pieces

  def data(self, x: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(target, encoder_input)`: binarized {0, 1} and its [-1, 1] image for 'bernoulli'."""
    if self.likelihood == "bernoulli":
      xb = lik.binarize(rng, x)
      return xb, 2.0 * xb - 1.0
    return x, x

  def encode(self, params, x: jax.Array, *, train: bool = False,
             rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Posterior `(mean, logvar)` of q(z|x)."""
    rngs = {"dropout": rng} if train else None
    h = self.encoder.apply({"params": params["encoder"]}, x, train=train, rngs=rngs)
    mean, logvar = jnp.split(h, 2, axis=-1)
    return mean, logvar

  def decode(self, params, z: jax.Array, *, train: bool = False,
             rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
    """Decoder outputs: `(logits, None)` for 'bernoulli', else `(mean, log_scale)`."""
    rngs = {"dropout": rng} if train else None
    h = self.decoder.apply({"params": params["decoder"]}, z, train=train, rngs=rngs)
    if self.likelihood == "bernoulli":
      return h, None
    mean, log_scale = jnp.split(h, 2, axis=-1)
    return mean, jnp.maximum(log_scale, MIN_LOG_SCALE)

  def log_px_z(self, params, z: jax.Array, target: jax.Array, *, train: bool = False,
               rng: jax.Array | None = None) -> jax.Array:
    """log p(x|z) per image, nats."""
    a, b = self.decode(params, z, train=train, rng=rng)
    if self.likelihood == "bernoulli":
      return lik.bernoulli_log_prob(a, target)
    if self.likelihood == "gaussian":
      return lik.gaussian_log_prob(target, a, b)
    return lik.discretized_logistic_log_prob(target, a, b)

  def mean_image(self, params, z: jax.Array) -> jax.Array:
    """The decoder's mean as an image in [-1, 1]."""
    a, _ = self.decode(params, z)
    if self.likelihood == "bernoulli":
      return 2.0 * jax.nn.sigmoid(a) - 1.0
    return jnp.clip(a, -1.0, 1.0)

  # ------------------------------------------------------------------ losses and bounds

  def elbo_terms(self, params, batch: dict[str, jax.Array], rng: jax.Array, *,
                 train: bool = False) -> tuple[jax.Array, jax.Array]:
    """`(rec, kl)` per image: one-sample E_q log p(x|z) and the analytic KL, nats."""
    data_rng, z_rng, enc_rng, dec_rng = jax.random.split(rng, 4)
    target, x_in = self.data(batch["image"], data_rng)
    mean, logvar = self.encode(params, x_in, train=train, rng=enc_rng)
    z = lik.reparameterize(z_rng, mean, logvar)
    rec = self.log_px_z(params, z, target, train=train, rng=dec_rng)
    return rec, lik.gaussian_kl(mean, logvar)

  def _metrics(self, rec, kl, num_dims: int) -> dict[str, jax.Array]:
    elbo = jnp.mean(rec - kl)
    return {"elbo": elbo, "rec": jnp.mean(rec), "kl": jnp.mean(kl),
            "bpd": lik.bits_per_dim(elbo, num_dims, n_bits=0)}

  def loss_fn(self, params, batch: dict[str, jax.Array], rng: jax.Array,
              beta: jax.Array | float = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`(loss, metrics)`: loss = mean over images of -(rec - beta * kl), nats."""
    rec, kl = self.elbo_terms(params, batch, rng, train=True)
    loss = -jnp.mean(rec - beta * kl)
    num_dims = math.prod(batch["image"].shape[1:])
    return loss, {"loss": loss, "beta": jnp.asarray(beta, jnp.float32),
                  **self._metrics(rec, kl, num_dims)}

  def iwae_log_likelihood(self, params, x: jax.Array, rng: jax.Array, k: int) -> jax.Array:
    """Importance-weighted estimate of log p(x) per image with `k` posterior samples, nats.

    log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x); a lower bound on log p(x) that
    tightens as k grows and equals a one-sample ELBO estimate at k = 1. For 'bernoulli' the
    images are binarized once with `rng` and shared by all k samples.
    """
    data_rng, z_rng = jax.random.split(rng)
    target, x_in = self.data(x, data_rng)
    mean, logvar = self.encode(params, x_in)

    def log_weight(key):
      z = lik.reparameterize(key, mean, logvar)
      return (self.log_px_z(params, z, target) + lik.standard_normal_log_prob(z)
              - lik.diag_gaussian_log_prob(z, mean, logvar))

    log_w = jax.lax.map(log_weight, jax.random.split(z_rng, k), batch_size=min(k, 8))
    return iwae_bound(log_w)

  # ------------------------------------------------------------------ the loop's contract

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    beta = kl_weight(state.step, self.beta, self.kl_warmup_steps)
    return state.gradient_step(self.loss_fn, batch, rng, beta)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """ELBO (beta = 1), its terms, bits/dim and the k-sample IWAE log-likelihood (EMA params)."""
    elbo_rng, iwae_rng = jax.random.split(rng)
    rec, kl = self.elbo_terms(state.ema_params, batch, elbo_rng)
    num_dims = math.prod(batch["image"].shape[1:])
    metrics = self._metrics(rec, kl, num_dims)
    ll = jnp.mean(self.iwae_log_likelihood(state.ema_params, batch["image"], iwae_rng,
                                           self.iwae_k))
    return {**metrics, "loss": -metrics["elbo"], "iwae_ll": ll,
            "iwae_bpd": lik.bits_per_dim(ll, num_dims, n_bits=0)}

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """Decoder means of `n` latents from the prior N(0, I), EMA params, in [-1, 1]."""
    size = self.decoder.image_size
    z = jax.random.normal(rng, (n, *self.latent_shape(size)))
    return self.mean_image(state.ema_params, z)

  def interpolate(self, params, x_a: jax.Array, x_b: jax.Array, steps: int) -> jax.Array:
    """Decoded images along the line between the posterior means of images x_a and x_b."""
    (m_a, _), (m_b, _) = self.encode(params, x_a[None]), self.encode(params, x_b[None])
    return self.mean_image(params, lerp(m_a[0], m_b[0], steps))

  @property
  def sample_tag(self) -> str:
    return f"prior_{self.likelihood}"


def make_method(config: Any) -> VAE:
  """Translates an experiment config (`model`, `vae`, `optim`, `train`) into a `VAE`."""
  v = config.vae
  channels = config.data.channels * (1 if v.likelihood == "bernoulli" else 2)
  encoder, decoder = make_networks(config, encoder_features=2 * config.model.latent_dim,
                                   decoder_channels=channels)
  return VAE(encoder=encoder, decoder=decoder,
             tx=make_optimizer(config.optim, total_steps=config.train.num_steps),
             likelihood=v.likelihood, beta=v.beta, kl_warmup_steps=v.kl_warmup_steps,
             iwae_k=v.iwae_k, ema_decay=config.train.ema_decay,
             ema_warmup=config.train.ema_warmup)
