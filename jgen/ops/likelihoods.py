"""Densities of the VAE: the diagonal-Gaussian posterior and prior, and the decoders' likelihoods;
the discretized logistic mixture of PixelCNN++ (Salimans et al. 2017) and its sampler.

Every VAE function returns log-probabilities in nats summed over all but the leading (batch)
axis, so `[B, ...] -> [B]`. Images are in [-1, 1]. The prior's `standard_normal_log_prob` is
also the flows' prior, and `bits_per_dim` the one bits/dim of VAEs and flows.

The discretized logistic mixture is one implementation: `logistic_mixture_log_prob` is the joint
log-probability of each pixel's channels, and the VAE's `discretized_logistic_log_prob` is its
one-component, one-channel case applied to every array element.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

LIKELIHOODS = ("bernoulli", "gaussian", "logistic")

__all__ = ["LIKELIHOODS", "LogisticMixture", "bernoulli_log_prob", "binarize",
           "diag_gaussian_log_prob", "discretized_logistic_log_prob", "gaussian_kl",
           "logistic_mixture_channel_log_probs", "logistic_mixture_log_prob",
           "mixture_num_params", "quantize_to_bins", "reparameterize", "sample_logistic_mixture",
           "split_mixture_params", "standard_normal_log_prob", "bits_per_dim"]


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


class LogisticMixture(NamedTuple):
  """A mixture of K logistics per pixel with C channels (PixelCNN++'s output distribution).

  Component k draws channel c from a logistic with location
  ``means[c, k] + sum_{c' < c} coeffs[pair(c, c'), k] * x_{c'}`` (the earlier channels of the same
  pixel: for RGB, ``mu_G + a x_R`` and ``mu_B + b x_R + c x_G``) and scale
  ``exp(log_scales[c, k])``; the channels of one component are otherwise independent and the
  K components are weighted by ``softmax(logits)``. Pairs ``(c, c')`` with ``c' < c`` are in the
  order (1,0), (2,0), (2,1), (3,0) ...: ``pair(c, c') = c (c - 1) / 2 + c'``.

  Attributes:
    logits: [..., K] unnormalized log mixture weights.
    means: [..., C, K].
    log_scales: [..., C, K].
    coeffs: [..., C (C - 1) / 2, K] (empty for C = 1).
  """

  logits: jax.Array
  means: jax.Array
  log_scales: jax.Array
  coeffs: jax.Array


def mixture_num_params(channels: int, num_components: int) -> int:
  """Numbers per pixel of a `LogisticMixture`: K (1 + 2 C + C (C - 1) / 2): 3 K for C = 1,
  10 K for C = 3."""
  if channels < 1 or num_components < 1:
    raise ValueError(f"a logistic mixture needs channels >= 1 and num_components >= 1, got "
                     f"channels={channels}, num_components={num_components}")
  return num_components * (1 + 2 * channels + channels * (channels - 1) // 2)


def split_mixture_params(out: jax.Array, channels: int, num_components: int, *,
                         min_log_scale: float = -7.0) -> LogisticMixture:
  """A `LogisticMixture` from a network's raw output `[..., mixture_num_params(C, K)]`.

  As in PixelCNN++: log-scales are clipped below at `min_log_scale` (-7: scale 9e-4, well under
  the half-bin 1/255) and the channel coefficients go through tanh.
  """
  k, c = num_components, channels
  if out.shape[-1] != mixture_num_params(c, k):
    raise ValueError(f"a {k}-component logistic mixture over {c} channels has "
                     f"{mixture_num_params(c, k)} parameters per pixel; got an output with "
                     f"{out.shape[-1]} (last axis of shape {out.shape})")
  lead = out.shape[:-1]
  num_pairs = c * (c - 1) // 2
  logits, means, log_scales, coeffs = jnp.split(out, [k, k + c * k, k + 2 * c * k], axis=-1)
  return LogisticMixture(logits=logits, means=means.reshape(*lead, c, k),
                         log_scales=jnp.maximum(log_scales.reshape(*lead, c, k), min_log_scale),
                         coeffs=jnp.tanh(coeffs.reshape(*lead, num_pairs, k)))


def _pair(c: int, c_prev: int) -> int:
  return c * (c - 1) // 2 + c_prev


def _channel_locations(mix: LogisticMixture, x: jax.Array) -> jax.Array:
  """[..., C, K]: each component's location of channel c given the pixel's channels x_{<c}."""
  channels = mix.means.shape[-2]
  locs = [mix.means[..., 0, :]]
  for c in range(1, channels):
    loc = mix.means[..., c, :]
    for c_prev in range(c):
      loc = loc + mix.coeffs[..., _pair(c, c_prev), :] * x[..., c_prev, None]
    locs.append(loc)
  return jnp.stack(locs, axis=-2)


def _log_bin_prob(x: jax.Array, mean: jax.Array, log_scale: jax.Array, num_bins: int
                  ) -> jax.Array:
  """Elementwise log P(bin of x) of a logistic(mean, exp(log_scale)) discretized into bins.

  Bin k covers [x_k - 1/(num_bins-1), x_k + 1/(num_bins-1)]; the edge bins extend to -inf and
  +inf so the probabilities sum to one. Where the bin's CDF difference underflows float32
  (< 1e-5) the density at the bin centre times the bin width stands in (PixelCNN++).
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
  return jnp.where(x < -1.0 + half, log_cdf_plus,
                   jnp.where(x > 1.0 - half, log_one_minus_cdf_min, log_mid))


def logistic_mixture_log_prob(x: jax.Array, mix: LogisticMixture, num_bins: int = 256
                              ) -> jax.Array:
  """log P(x) of each pixel: x [..., C] on the `num_bins` grid in [-1, 1] -> [...] in nats.

  log P(x) = logsumexp_k [log softmax(logits)_k + sum_c log P_k(x_c | x_{<c})], where
  P_k(x_c | x_{<c}) is the discretized logistic of `_log_bin_prob` at the location of
  `LogisticMixture` (which conditions on the pixel's true earlier channels), so the
  probabilities of the num_bins^C values of a pixel sum to one.
  """
  if num_bins < 2:
    raise ValueError(f"num_bins must be >= 2, got {num_bins}")
  if mix.means.shape[-2] != x.shape[-1]:
    raise ValueError(f"the mixture is over {mix.means.shape[-2]} channels but x has "
                     f"{x.shape[-1]} (shape {x.shape}); the last axis of x is the channels")
  locs = _channel_locations(mix, x)
  log_bins = _log_bin_prob(x[..., None], locs, mix.log_scales, num_bins)   # [..., C, K]
  return jax.nn.logsumexp(jax.nn.log_softmax(mix.logits, axis=-1) + jnp.sum(log_bins, axis=-2),
                          axis=-1)


def discretized_logistic_log_prob(x: jax.Array, mean: jax.Array, log_scale: jax.Array,
                                  num_bins: int = 256) -> jax.Array:
  """log P(x) of 8-bit images in [-1, 1] under a logistic discretized into `num_bins` bins.

  The one-component, one-channel `logistic_mixture_log_prob` of every element (each element
  its own pixel, the elements independent), summed over all but the batch axis. Bin k covers
  [x_k - 1/(num_bins-1), x_k + 1/(num_bins-1)]; the edge bins extend to -inf and +inf so the
  probabilities sum to one (Salimans et al. 2017, without the mixture).
  """
  mean, log_scale = jnp.broadcast_to(mean, x.shape), jnp.broadcast_to(log_scale, x.shape)
  mix = LogisticMixture(logits=jnp.zeros((*x.shape, 1), x.dtype),
                        means=mean[..., None, None], log_scales=log_scale[..., None, None],
                        coeffs=jnp.zeros((*x.shape, 0, 1), x.dtype))
  return _sum_rest(logistic_mixture_log_prob(x[..., None], mix, num_bins))


def quantize_to_bins(x: jax.Array, num_bins: int = 256) -> jax.Array:
  """x clipped to [-1, 1] and rounded to the nearest of the `num_bins` bin centres."""
  levels = jnp.round((jnp.clip(x, -1.0, 1.0) + 1.0) * (0.5 * (num_bins - 1)))
  return levels * (2.0 / (num_bins - 1)) - 1.0


def sample_logistic_mixture(rng: jax.Array, mix: LogisticMixture, num_bins: int = 256
                            ) -> jax.Array:
  """One draw of each pixel from `mix`: [..., C] on the `num_bins` grid in [-1, 1].

  A component k ~ softmax(logits) (Gumbel-max), then channel by channel a logistic
  y_c = loc_c + s_c log(u / (1 - u)), u ~ U(0, 1), whose bin is the quantized clip of y_c; the
  location of channel c uses the quantized earlier channels, exactly what
  `logistic_mixture_log_prob` conditions on, so the draws follow that distribution exactly.
  """
  channels, k = mix.means.shape[-2:]
  comp_rng, u_rng = jax.random.split(rng)
  comp = jax.random.categorical(comp_rng, mix.logits, axis=-1)
  onehot = jax.nn.one_hot(comp, k, dtype=mix.means.dtype)                  # [..., K]
  pick = lambda a: jnp.sum(a * onehot[..., None, :], axis=-1)              # [..., n, K] -> [..., n]
  means, log_scales, coeffs = pick(mix.means), pick(mix.log_scales), pick(mix.coeffs)
  u = jax.random.uniform(u_rng, means.shape, means.dtype, minval=1e-5, maxval=1.0 - 1e-5)
  noise = jnp.exp(log_scales) * (jnp.log(u) - jnp.log1p(-u))
  xs = []
  for c in range(channels):
    loc = means[..., c]
    for c_prev in range(c):
      loc = loc + coeffs[..., _pair(c, c_prev)] * xs[c_prev]
    xs.append(quantize_to_bins(loc + noise[..., c], num_bins))
  return jnp.stack(xs, axis=-1)


def logistic_mixture_channel_log_probs(mix: LogisticMixture, x: jax.Array, channel: int,
                                       num_bins: int = 256) -> jax.Array:
  """log P(x_c = b | x_{<c}) of every bin b of one channel: [..., num_bins] in nats.

  The mixture's conditional of channel c given the pixel's earlier channels x_{<c} (``x``
  [..., C]; its channels >= c are not read):
  P(x_c = b | x_{<c}) = sum_k r_k P_k(x_c = b | x_{<c}), with the components' posterior
  r_k proportional to softmax(logits)_k prod_{c' < c} P_k(x_{c'} | x_{<c'}); for c = 0,
  r = softmax(logits). Bin b is the b-th of the `num_bins` centres from -1 to 1. Chaining
  the channels gives `logistic_mixture_log_prob`: sum_c log P(x_c | x_{<c}) = log P(x). A
  sampler that reshapes each channel's categorical (temperature, truncation, guidance) draws
  from these tables (`jgen.autoregressive.pixelcnn.sample_pixel_bins`).
  """
  if not 0 <= channel < mix.means.shape[-2]:
    raise ValueError(f"channel {channel} of a {mix.means.shape[-2]}-channel mixture")
  locs = _channel_locations(mix, x)                                          # [..., C, K]
  log_r = jax.nn.log_softmax(mix.logits, axis=-1)
  for c_prev in range(channel):
    log_r = log_r + _log_bin_prob(x[..., c_prev, None], locs[..., c_prev, :],
                                  mix.log_scales[..., c_prev, :], num_bins)
  log_r = log_r - jax.nn.logsumexp(log_r, axis=-1, keepdims=True)
  centres = jnp.linspace(-1.0, 1.0, num_bins, dtype=mix.means.dtype)
  log_bins = _log_bin_prob(centres[:, None], locs[..., None, channel, :],
                           mix.log_scales[..., None, channel, :], num_bins)   # [..., bins, K]
  return jax.nn.logsumexp(log_r[..., None, :] + log_bins, axis=-1)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
  """`log N(z; 0, I)` per example (sum over all but the batch axis), nats, float32.

  The one standard-normal log-density of jgen: the flows' prior and the VAE's prior.
  """
  z = z.reshape(z.shape[0], -1).astype(jnp.float32)
  return -0.5 * jnp.sum(z * z + math.log(2.0 * math.pi), axis=-1)


def bits_per_dim(log_p: jax.Array, num_dims: int, n_bits: int = 8) -> jax.Array:
  """`n_bits - log p / (D log 2)`: bits/dim of discrete data of `num_dims` = D dimensions.

  The one bits/dim of jgen. For a flow, `log_p` is the density `log p(y)` (nats) of the
  dequantized data `y` in [0, 1]^D and `n_bits` the bits per pixel (the `-D log 2^n_bits` of
  the discrete-data bound). With `n_bits=0` it is `-log_p / (D log 2)`: the bits/dim of a
  log-probability of the discrete data itself (a VAE's ELBO or IWAE bound)."""
  return n_bits - log_p / (num_dims * math.log(2.0))
