"""Densities of the VAE: the diagonal-Gaussian posterior and prior, and the decoders' likelihoods.

Every function returns log-probabilities in nats summed over all but the leading (batch) axis,
so `[B, ...] -> [B]`. Images are in [-1, 1]. The prior's `standard_normal_log_prob` is the
flows' (`jgen.flow.likelihood`, re-exported here), as is the bits/dim the VAE reports.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jgen.flow.likelihood import standard_normal_log_prob

LIKELIHOODS = ("bernoulli", "gaussian", "logistic")

__all__ = ["LIKELIHOODS", "bernoulli_log_prob", "binarize", "diag_gaussian_log_prob",
           "discretized_logistic_log_prob", "gaussian_kl", "reparameterize",
           "standard_normal_log_prob"]


def _sum_rest(x: jax.Array) -> jax.Array:
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def reparameterize(rng: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I): a sample that is differentiable in both."""
  eps = jax.random.normal(rng, mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * logvar) * eps


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) in closed form, per example."""
  return 0.5 * _sum_rest(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar)


def diag_gaussian_log_prob(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(z; mean, diag(exp(logvar))), per example."""
  return -0.5 * _sum_rest(math.log(2 * math.pi) + logvar
                          + jnp.square(z - mean) * jnp.exp(-logvar))


def binarize(rng: jax.Array, x: jax.Array) -> jax.Array:
  """Stochastic binarization of images in [-1, 1]: pixel = 1 with probability (x + 1) / 2.

  Returns {0, 1} float images (the Bernoulli decoder's data).
  """
  return jax.random.bernoulli(rng, jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)).astype(jnp.float32)


def bernoulli_log_prob(logits: jax.Array, x01: jax.Array) -> jax.Array:
  """log Bernoulli(x01; sigmoid(logits)) for x01 in {0, 1}, per example."""
  return _sum_rest(x01 * jax.nn.log_sigmoid(logits) + (1.0 - x01) * jax.nn.log_sigmoid(-logits))


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_scale: jax.Array) -> jax.Array:
  """log N(x; mean, exp(log_scale)^2), a density on continuous x, per example."""
  return -_sum_rest(0.5 * math.log(2 * math.pi) + log_scale
                    + 0.5 * jnp.square((x - mean) * jnp.exp(-log_scale)))


def discretized_logistic_log_prob(x: jax.Array, mean: jax.Array, log_scale: jax.Array,
                                  num_bins: int = 256) -> jax.Array:
  """log P(x) of 8-bit images in [-1, 1] under a logistic discretized into `num_bins` bins.

  Bin k covers [x_k - 1/(num_bins-1), x_k + 1/(num_bins-1)]; the edge bins extend to -inf and
  +inf so the probabilities sum to one (Salimans et al. 2017, without the mixture).
  """
  half = 1.0 / (num_bins - 1)
  centered = x - mean
  inv_s = jnp.exp(-log_scale)
  plus_in = inv_s * (centered + half)
  min_in = inv_s * (centered - half)
  log_cdf_plus = jax.nn.log_sigmoid(plus_in)            # for the lowest bin
  log_one_minus_cdf_min = jax.nn.log_sigmoid(-min_in)   # for the highest bin
  cdf_delta = jax.nn.sigmoid(plus_in) - jax.nn.sigmoid(min_in)
  mid_in = inv_s * centered
  log_pdf_mid = mid_in - log_scale - 2.0 * jax.nn.softplus(mid_in)
  log_mid = jnp.where(cdf_delta > 1e-5, jnp.log(jnp.maximum(cdf_delta, 1e-12)),
                      log_pdf_mid + math.log(2 * half))
  log_p = jnp.where(x < -1.0 + half, log_cdf_plus,
                    jnp.where(x > 1.0 - half, log_one_minus_cdf_min, log_mid))
  return _sum_rest(log_p)
