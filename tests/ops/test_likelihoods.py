"""VAE math against closed forms and Monte-Carlo: KL, reparameterization, likelihoods, IWAE."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jgen.ops import likelihoods as lik
from jgen.autoencoder.vae import iwae_bound, kl_weight, lerp


def test_analytic_kl_matches_monte_carlo():
  mean = jnp.array([[0.5, -1.0, 0.2]])
  logvar = jnp.array([[-0.5, 0.3, -1.2]])
  z = lik.reparameterize(jax.random.key(0), jnp.broadcast_to(mean, (200_000, 3)),
                         jnp.broadcast_to(logvar, (200_000, 3)))
  mc = jnp.mean(lik.diag_gaussian_log_prob(z, mean, logvar) - lik.standard_normal_log_prob(z))
  np.testing.assert_allclose(float(mc), float(lik.gaussian_kl(mean, logvar)[0]), atol=0.01)


def test_log_probs_match_scipy():
  rng = np.random.default_rng(0)
  z, m = rng.normal(size=(2, 5)), rng.normal(size=(2, 5))
  lv = rng.normal(size=(2, 5)) * 0.3
  ref = stats.norm.logpdf(z, m, np.exp(0.5 * lv)).sum(-1)
  np.testing.assert_allclose(lik.diag_gaussian_log_prob(z, m, lv), ref, rtol=1e-5)
  np.testing.assert_allclose(lik.gaussian_log_prob(z, m, 0.5 * lv), ref, rtol=1e-5)
  np.testing.assert_allclose(lik.standard_normal_log_prob(z), stats.norm.logpdf(z).sum(-1),
                             rtol=1e-5)
  logits, x = rng.normal(size=(2, 6)), rng.integers(0, 2, size=(2, 6)).astype(np.float32)
  ref = stats.bernoulli.logpmf(x, 1 / (1 + np.exp(-logits))).sum(-1)
  np.testing.assert_allclose(lik.bernoulli_log_prob(logits, x), ref, rtol=1e-5)


def test_discretized_logistic_sums_to_one_over_256_levels():
  x = (jnp.arange(256, dtype=jnp.float32) / 127.5 - 1.0)[:, None]
  for mean, log_scale in [(0.1, -2.0), (-0.95, -4.0), (0.99, 0.5)]:
    lp = lik.discretized_logistic_log_prob(x, jnp.full_like(x, mean), jnp.full_like(x, log_scale))
    np.testing.assert_allclose(float(jnp.sum(jnp.exp(lp))), 1.0, atol=1e-4)


def test_reparameterization_gradients_reach_mean_and_logvar():
  mean, logvar = jnp.array([[0.3, -0.2]]), jnp.array([[0.1, -0.4]])
  eps = jax.random.normal(jax.random.key(3), mean.shape)

  def f(mean, logvar):
    return jnp.sum(lik.reparameterize(jax.random.key(3), mean, logvar) ** 2)

  g_mean, g_logvar = jax.grad(f, argnums=(0, 1))(mean, logvar)
  z = mean + jnp.exp(0.5 * logvar) * eps
  np.testing.assert_allclose(g_mean, 2 * z, rtol=1e-5)
  np.testing.assert_allclose(g_logvar, 2 * z * eps * 0.5 * jnp.exp(0.5 * logvar), rtol=1e-5)
  assert np.all(np.abs(g_logvar) > 0)


def test_kl_warmup_and_lerp():
  assert float(kl_weight(jnp.array(50), 2.0, 100)) == pytest.approx(1.0)
  assert float(kl_weight(jnp.array(500), 2.0, 100)) == pytest.approx(2.0)
  assert float(kl_weight(jnp.array(0), 0.5, 0)) == pytest.approx(0.5)
  path = lerp(jnp.zeros(3), jnp.ones(3), 5)
  np.testing.assert_allclose(path[:, 0], [0, 0.25, 0.5, 0.75, 1.0])
  np.testing.assert_allclose(iwae_bound(jnp.log(jnp.array([[1.0], [3.0]]))), [math.log(2.0)],
                             rtol=1e-6)
