"""The discretized logistic mixture against SciPy: normalization, log-probs, the VAE's one-component
case, and the sampler's draws against the probabilities."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jgen.autoregressive.pixelcnn import sample_pixel_bins
from jgen.ops import likelihoods as lik


def random_mixture(rng, lead, channels, k, *, log_scale=(-3.0, -0.5)):
  return lik.LogisticMixture(
      logits=jnp.asarray(rng.normal(size=(*lead, k)), jnp.float32),
      means=jnp.asarray(rng.uniform(-0.9, 0.9, size=(*lead, channels, k)), jnp.float32),
      log_scales=jnp.asarray(rng.uniform(*log_scale, size=(*lead, channels, k)), jnp.float32),
      coeffs=jnp.asarray(np.tanh(rng.normal(size=(*lead, channels * (channels - 1) // 2, k))),
                         jnp.float32))


def grid(num_bins, channels):
  """Every pixel value: [num_bins^C, C] bin centres in [-1, 1]."""
  levels = np.arange(num_bins) * (2.0 / (num_bins - 1)) - 1.0
  return jnp.asarray(np.array(list(itertools.product(levels, repeat=channels))), jnp.float32)


def broadcast(mix, n):
  return lik.LogisticMixture(*(jnp.broadcast_to(a, (n, *a.shape[1:])) for a in mix))


def log_bin(x, loc, s, half):
  """log P(bin of x) of a logistic(loc, s) in float64: a CDF difference, taken on the side of the
  tail the bin lies in (survival functions right of loc) so that it does not cancel to zero."""
  lo = np.where(x < -1 + half, -np.inf, x - half)
  up = np.where(x > 1 - half, np.inf, x + half)
  with np.errstate(divide="ignore"):  # the side np.where drops may underflow
    left = stats.logistic.logcdf(up, loc, s)
    left = left + np.log1p(-np.exp(stats.logistic.logcdf(lo, loc, s) - left))
    right = stats.logistic.logsf(lo, loc, s)
    right = right + np.log1p(-np.exp(stats.logistic.logsf(up, loc, s) - right))
  return np.where(x > loc, right, left)


def scipy_log_prob(x, mix, num_bins):
  """log P(x) per pixel in float64 with SciPy's logistic CDF, written from the paper's formula."""
  x = np.asarray(x, np.float64)
  logits, means, log_scales, coeffs = (np.asarray(a, np.float64) for a in mix)
  channels = x.shape[-1]
  half = 1.0 / (num_bins - 1)
  log_w = logits - special.logsumexp(logits, axis=-1, keepdims=True)
  total = log_w.copy()
  for c in range(channels):
    loc = means[..., c, :].copy()
    for c_prev in range(c):
      loc += coeffs[..., c * (c - 1) // 2 + c_prev, :] * x[..., c_prev, None]
    total += log_bin(x[..., c, None], loc, np.exp(log_scales[..., c, :]), half)
  return special.logsumexp(total, axis=-1)


@pytest.mark.parametrize("channels,num_bins", [(1, 256), (2, 256), (3, 16)])
def test_mixture_sums_to_one_over_every_pixel_value(channels, num_bins):
  rng = np.random.default_rng(channels)
  values = grid(num_bins, channels)
  for log_scale in [(-3.0, -0.5), (-6.0, -5.0)]:
    mix = random_mixture(rng, (1,), channels, 4, log_scale=log_scale)
    p = jnp.exp(lik.logistic_mixture_log_prob(values, broadcast(mix, len(values)), num_bins))
    np.testing.assert_allclose(float(jnp.sum(p)), 1.0, atol=2e-4)


@pytest.mark.parametrize("channels", [1, 3])
def test_mixture_log_prob_matches_scipy(channels):
  rng = np.random.default_rng(10 + channels)
  n = 400
  mix = random_mixture(rng, (n,), channels, 5)
  levels = rng.integers(0, 256, size=(n, channels))
  levels[:20] = 0      # the open-ended edge bins
  levels[20:40] = 255
  x = jnp.asarray(levels / 127.5 - 1.0, jnp.float32)
  ours = lik.logistic_mixture_log_prob(x, mix, 256)
  np.testing.assert_allclose(ours, scipy_log_prob(x, mix, 256), rtol=2e-4, atol=2e-4)


def test_one_component_is_the_vaes_discretized_logistic():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.integers(0, 256, size=(3, 4, 4, 3)) / 127.5 - 1.0, jnp.float32)
  mean = jnp.asarray(rng.uniform(-1, 1, size=x.shape), jnp.float32)
  log_scale = jnp.asarray(rng.uniform(-4, 0, size=x.shape), jnp.float32)
  old = lik.discretized_logistic_log_prob(x, mean, log_scale)
  # The closed form: per element log[CDF(x + 1/255) - CDF(x - 1/255)], edges open, summed.
  xs, m, s = (np.asarray(a, np.float64) for a in (x, mean, jnp.exp(log_scale)))
  np.testing.assert_allclose(old, log_bin(xs, m, s, 1 / 255).reshape(3, -1).sum(-1), rtol=1e-4)
  # ... and the one-component mixture over the 3 channels (no coefficients) gives the same.
  mix = lik.LogisticMixture(logits=jnp.zeros((*x.shape[:-1], 1)), means=mean[..., None],
                            log_scales=log_scale[..., None],
                            coeffs=jnp.zeros((*x.shape[:-1], 3, 1)))
  np.testing.assert_allclose(jnp.sum(lik.logistic_mixture_log_prob(x, mix), axis=(1, 2)), old,
                             rtol=1e-5)


def test_split_mixture_params_layout_and_errors():
  k, c = 3, 3
  out = jnp.arange(lik.mixture_num_params(c, k), dtype=jnp.float32)[None]
  assert lik.mixture_num_params(c, k) == 30 and lik.mixture_num_params(1, 5) == 15
  mix = lik.split_mixture_params(out * 0.01, c, k)
  assert mix.logits.shape == (1, 3) and mix.means.shape == (1, 3, 3)
  assert mix.log_scales.shape == (1, 3, 3) and mix.coeffs.shape == (1, 3, 3)
  np.testing.assert_allclose(mix.coeffs[0, 0], np.tanh(np.arange(21, 24) * 0.01), rtol=1e-6)
  assert float(lik.split_mixture_params(-100.0 * jnp.ones_like(out), c, k).log_scales.min()) == -7
  with pytest.raises(ValueError, match="has 30 parameters per pixel"):
    lik.split_mixture_params(out[:, :29], c, k)
  with pytest.raises(ValueError, match="channels"):
    lik.logistic_mixture_log_prob(jnp.zeros((1, 2)), mix)


@pytest.mark.parametrize("channels,num_bins", [(1, 256), (3, 4)])
def test_sampler_draws_follow_the_log_probs(channels, num_bins):
  rng = np.random.default_rng(20 + channels)
  mix = random_mixture(rng, (1,), channels, 3, log_scale=(-2.0, -0.5))
  n = 200_000
  draws = jax.jit(lik.sample_logistic_mixture, static_argnums=2)(
      jax.random.key(0), broadcast(mix, n), num_bins)
  levels = np.asarray(jnp.round((draws + 1) * (num_bins - 1) / 2)).astype(int)
  np.testing.assert_allclose(np.asarray(draws), levels * 2 / (num_bins - 1) - 1, atol=1e-6)
  assert levels.min() >= 0 and levels.max() <= num_bins - 1
  cells = np.ravel_multi_index(levels.T, (num_bins,) * channels)
  freq = np.bincount(cells, minlength=num_bins ** channels) / n
  values = grid(num_bins, channels)
  p = np.exp(np.asarray(lik.logistic_mixture_log_prob(values, broadcast(mix, len(values)),
                                                      num_bins)))
  # Total variation between the empirical and the model's distribution (expected ~0.01 at 256
  # cells and 2e5 draws from sampling noise alone; a wrong channel coefficient gives > 0.1).
  assert 0.5 * np.abs(freq - p).sum() < 0.02
  again = lik.sample_logistic_mixture(jax.random.key(0), broadcast(mix, 16), num_bins)
  np.testing.assert_array_equal(again, lik.sample_logistic_mixture(jax.random.key(0),
                                                                   broadcast(mix, 16), num_bins))


@pytest.mark.parametrize("channels,num_bins", [(1, 256), (3, 6)])
def test_channel_conditionals_normalize_and_chain_to_the_joint(channels, num_bins):
  rng = np.random.default_rng(40 + channels)
  mix = random_mixture(rng, (5,), channels, 4)
  x = jnp.asarray(rng.integers(0, num_bins, size=(5, channels)) * 2 / (num_bins - 1) - 1,
                  jnp.float32)
  total = np.zeros(5)
  for c in range(channels):
    table = np.asarray(lik.logistic_mixture_channel_log_probs(mix, x, c, num_bins))
    assert table.shape == (5, num_bins)
    np.testing.assert_allclose(special.logsumexp(table, axis=-1), 0.0, atol=1e-5)
    bins = np.round((np.asarray(x[:, c]) + 1) * (num_bins - 1) / 2).astype(int)
    total += table[np.arange(5), bins]
  # sum_c log P(x_c | x_{<c}) is the joint log P(x) of SciPy's formula.
  np.testing.assert_allclose(total, scipy_log_prob(x, mix, num_bins), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="channel"):
    lik.logistic_mixture_channel_log_probs(mix, x, channels, num_bins)


@pytest.mark.parametrize("channels,num_bins", [(1, 256), (3, 4)])
def test_bin_sampler_follows_the_mixture_and_its_guided_tempered_truncated_forms(channels,
                                                                                  num_bins):
  rng = np.random.default_rng(60 + channels)
  mix, null = (random_mixture(rng, (1,), channels, 3, log_scale=(-2.0, -0.5)) for _ in "ab")
  values = grid(num_bins, channels)
  log_p = np.asarray(lik.logistic_mixture_log_prob(values, broadcast(mix, len(values)), num_bins),
                     np.float64)
  log_u = np.asarray(lik.logistic_mixture_log_prob(values, broadcast(null, len(values)),
                                                   num_bins), np.float64)
  n = 200_000
  draw = jax.jit(sample_pixel_bins, static_argnums=2,
                 static_argnames=("temperature", "guidance_scale", "top_p"))

  def tv(draws, target_log):
    levels = np.asarray(jnp.round((draws + 1) * (num_bins - 1) / 2)).astype(int)
    cells = np.ravel_multi_index(levels.T, (num_bins,) * channels)
    freq = np.bincount(cells, minlength=num_bins ** channels) / n
    return 0.5 * np.abs(freq - np.exp(target_log - special.logsumexp(target_log))).sum()

  # T = 1, w = 1: the mixture itself (sampling noise ~0.01 at 256 cells, 2e5 draws).
  assert tv(draw(jax.random.key(0), broadcast(mix, n), num_bins), log_p) < 0.02
  if channels == 1:
    # One channel: the tempered guided draw is exactly softmax([log P_u + w (log P - log P_u)] / T)
    # over the bins (for C > 1 each channel is guided given the earlier ones, not the joint).
    guided = draw(jax.random.key(1), broadcast(mix, n), num_bins, temperature=0.7,
                  null_mix=broadcast(null, n), guidance_scale=2.5)
    assert tv(guided, (log_u + 2.5 * (log_p - log_u)) / 0.7) < 0.02
    assert tv(guided, log_p) > 0.1   # and it is a different distribution from the mixture's
    # Top-p keeps the most probable bins whose mass reaches p (the token filter of
    # jgen.autoregressive.sampling): none of the draws lands outside that set.
    p = np.exp(log_p - special.logsumexp(log_p))
    order = np.argsort(-p, kind="stable")
    kept = order[:np.searchsorted(np.cumsum(p[order]), 0.5) + 1]
    nucleus = draw(jax.random.key(3), broadcast(mix, 4000), num_bins, top_p=0.5)
    levels = np.round((np.asarray(nucleus)[:, 0] + 1) * (num_bins - 1) / 2).astype(int)
    assert set(levels) <= set(kept) and len(set(levels)) > 1
  else:
    # w = 0 draws from the null mixture alone.
    unguided = draw(jax.random.key(2), broadcast(mix, n), num_bins, null_mix=broadcast(null, n),
                    guidance_scale=0.0)
    assert tv(unguided, log_u) < 0.02
  with pytest.raises(ValueError, match="null_mix"):
    sample_pixel_bins(jax.random.key(0), mix, num_bins, guidance_scale=2.0)
