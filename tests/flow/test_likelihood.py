"""Dequantization, the data scalings and bits/dim against hand-computed values."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgen.flow import likelihood as lik
from jgen.flow.method import FlowMethod
from jgen.ops.likelihoods import bits_per_dim, standard_normal_log_prob


class StandardNormal(nn.Module):
  """The identity flow: the data themselves have the density N(0, I)."""

  def log_prob(self, x):
    return standard_normal_log_prob(x)

  def __call__(self, x):
    return self.log_prob(x)


def flow(preprocessing="center", n_bits=8):
  return FlowMethod(model=StandardNormal(), tx=optax.sgd(0.0), preprocessing=preprocessing,
                    n_bits=n_bits)


def images(levels):
  """8-bit levels -> images in [-1, 1] as the loop hands them over."""
  return jnp.asarray(np.asarray(levels, np.float32) / 127.5 - 1.0)


def test_standard_normal_bits_per_dim_of_one_gray_level():
  # Every pixel at level 127; at the bin centre y = 127.5 / 256 and, centred, v = -0.5 / 256:
  # bits/dim = 8 - log N(v; 0, 1) / log 2 = 8 + (v^2 / 2 + log(2 pi) / 2) / log 2.
  x = images(np.full((2, 4, 4, 3), 127))
  v = -0.5 / 256
  expected = 8 + (0.5 * v * v + 0.5 * math.log(2 * math.pi)) / math.log(2)
  assert abs(expected - 9.3257508) < 1e-6
  bpd = flow().bits_per_dim({}, {}, x, None)
  np.testing.assert_allclose(bpd, [expected, expected], rtol=1e-6)


def numpy_bits_per_dim(levels, u, preprocessing, alpha=0.05):
  """The papers' bits/dim of 8-bit `levels` under N(0, I) on the scaled data, in float64."""
  y = (levels + u) / 256.0                   # uniform dequantization, in [0, 1)
  d = int(np.prod(levels.shape[1:]))
  axes = tuple(range(1, levels.ndim))
  if preprocessing == "center":
    v, log_dv_dy = y - 0.5, 0.0
  elif preprocessing == "symmetric":
    v, log_dv_dy = 2 * y - 1, d * math.log(2)
  else:
    p = alpha + (1 - 2 * alpha) * y
    v = np.log(p / (1 - p))
    log_dv_dy = np.sum(np.log((1 - 2 * alpha) / (p * (1 - p))), axis=axes)
  log_p_y = np.sum(-0.5 * v ** 2 - 0.5 * math.log(2 * math.pi), axis=axes) + log_dv_dy
  # -log P(levels) <= -(log p(y) - D log 256), in bits per dimension:
  return -(log_p_y - d * math.log(256)) / (d * math.log(2))


@pytest.mark.parametrize("preprocessing", ["center", "symmetric", "logit"])
def test_standard_normal_bits_per_dim_matches_numpy(preprocessing):
  rng = np.random.default_rng(0)
  levels = rng.integers(0, 256, (3, 4, 4, 1))
  levels[0, 0, 0, 0], levels[0, 0, 1, 0] = 0, 255  # both ends of the range
  # The method's whole path at the bin centres (no noise) ...
  got = flow(preprocessing).bits_per_dim({}, {}, images(levels), None)
  np.testing.assert_allclose(got, numpy_bits_per_dim(levels, 0.5, preprocessing), rtol=1e-6)
  # ... and its pieces with uniform noise u.
  u = rng.uniform(size=levels.shape)
  v, logdet = lik.preprocess(jnp.asarray((levels + u) / 256.0, jnp.float32), preprocessing)
  got = bits_per_dim(standard_normal_log_prob(v) + logdet, 16)
  np.testing.assert_allclose(got, numpy_bits_per_dim(levels, u, preprocessing), rtol=1e-6)


def test_fewer_bits_reduce_levels_and_the_discretization_term():
  x = images(np.full((1, 2, 2, 1), 200))  # level 200 -> 200 // 8 = 25 of 32 at 5 bits
  np.testing.assert_array_equal(lik.to_levels(x, 5), 25.0)
  v = (25.5 / 32) - 0.5
  expected = 5 + (0.5 * v * v + 0.5 * math.log(2 * math.pi)) / math.log(2)
  np.testing.assert_allclose(flow(n_bits=5).bits_per_dim({}, {}, x, None), [expected],
                             rtol=1e-6)
  # A uniform density on [0, 1]^D (log p(y) = 0) costs exactly n_bits per dimension.
  np.testing.assert_allclose(bits_per_dim(jnp.zeros(2), 12, n_bits=8), 8.0)


def test_dequantize_stays_in_its_bin_and_quantize_inverts_it():
  levels = np.arange(256).reshape(1, 16, 16, 1)
  x = images(levels)
  y = lik.dequantize(x, jax.random.key(0))
  np.testing.assert_array_equal(np.floor(np.asarray(y) * 256), levels)
  np.testing.assert_allclose(lik.quantize(y), x, atol=1e-6)
  np.testing.assert_array_equal(lik.to_levels(lik.quantize(y)), levels)
  np.testing.assert_allclose(lik.dequantize(x, None), (levels + 0.5) / 256, rtol=1e-6)
  y5 = lik.dequantize(x, jax.random.key(1), n_bits=5)
  np.testing.assert_array_equal(np.floor(np.asarray(y5) * 32), levels // 8)
  np.testing.assert_allclose(lik.quantize(y5, 5), images((levels // 8) * 8), atol=1e-6)


@pytest.mark.parametrize("preprocessing", ["center", "symmetric", "logit"])
def test_preprocess_inverts_and_logdet_matches_derivative(preprocessing):
  y = jax.random.uniform(jax.random.key(2), (2, 3, 3, 1), minval=0.001, maxval=0.999)
  v, logdet = lik.preprocess(y, preprocessing)
  np.testing.assert_allclose(lik.postprocess(v, preprocessing), y, rtol=1e-5, atol=1e-6)
  # The scalings act elementwise: log|det| = sum of log|dv_i/dy_i|.
  deriv = jax.jit(jax.vmap(jax.grad(lambda t: lik.preprocess(t.reshape(1, 1, 1, 1),
                                                     preprocessing)[0].sum())))(y.reshape(-1))
  np.testing.assert_allclose(logdet, np.log(np.abs(deriv)).reshape(2, -1).sum(-1), rtol=1e-5,
                             atol=1e-5)


def test_unknown_settings_raise():
  with pytest.raises(ValueError, match="preprocessing"):
    flow("sigmoid")
  with pytest.raises(ValueError, match="n_bits"):
    flow(n_bits=9)
  with pytest.raises(ValueError, match="temperature"):
    dataclasses.replace(flow(), temperature=-1.0)
