"""GAN losses against hand-computed values, the gradient penalty of a linear critic, R1,
clipping."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.gan import losses

REAL = np.array([2.0, -1.0, 0.5], np.float32)
FAKE = np.array([-3.0, 0.0, 1.0], np.float32)


def softplus(x):
  return np.log1p(np.exp(x))


def test_bce_losses_by_hand():
  sig = lambda x: 1.0 / (1.0 + np.exp(-x))
  d = np.mean(-np.log(sig(REAL))) + np.mean(-np.log(1.0 - sig(FAKE)))
  np.testing.assert_allclose(losses.discriminator_loss("minimax", REAL, FAKE), d, rtol=1e-6)
  np.testing.assert_allclose(losses.discriminator_loss("non_saturating", REAL, FAKE), d,
                             rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss("minimax", FAKE),
                             np.mean(np.log(1.0 - sig(FAKE))), rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss("non_saturating", FAKE),
                             np.mean(-np.log(sig(FAKE))), rtol=1e-6)
  # A single case worked out on paper: D(x) = sigmoid(0) = 1/2 for both -> 2 log 2.
  np.testing.assert_allclose(losses.discriminator_loss("minimax", np.zeros(1), np.zeros(1)),
                             2 * math.log(2.0), rtol=1e-6)


def test_hinge_least_squares_wasserstein_by_hand():
  # hinge: relu(1 - [2, -1, .5]) = [0, 2, .5] -> 2.5/3; relu(1 + [-3, 0, 1]) = [0, 1, 2] -> 1.
  np.testing.assert_allclose(losses.discriminator_loss("hinge", REAL, FAKE), 2.5 / 3 + 1.0,
                             rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss("hinge", FAKE), 2.0 / 3, rtol=1e-6)
  # least squares: (real - 1)^2 = [1, 4, .25] -> mean 5.25/3 /2 ; fake^2 = [9, 0, 1] -> 10/3 /2.
  np.testing.assert_allclose(losses.discriminator_loss("least_squares", REAL, FAKE),
                             0.5 * 5.25 / 3 + 0.5 * 10.0 / 3, rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss("least_squares", FAKE),
                             0.5 * (16.0 + 1.0 + 0.0) / 3, rtol=1e-6)
  # wasserstein: mean fake - mean real = -2/3 - 1.5/3.
  np.testing.assert_allclose(losses.discriminator_loss("wasserstein", REAL, FAKE),
                             -2.0 / 3 - 1.5 / 3, rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss("wasserstein", FAKE), 2.0 / 3, rtol=1e-6)


def test_stable_for_large_logits():
  big = np.array([80.0, -80.0], np.float32)
  for kind in ("minimax", "non_saturating"):
    assert np.isfinite(losses.discriminator_loss(kind, big, -big))
    assert np.isfinite(losses.generator_loss(kind, big))
    g = jax.grad(lambda f: losses.generator_loss(kind, f))(jnp.asarray(big))
    assert np.isfinite(g).all()


def test_saturation():
  """At a confident discriminator (fake logit -10) the minimax generator gradient vanishes and
  the non-saturating one does not: the reason for the non-saturating loss."""
  f = jnp.array([-10.0])
  g_mm = jax.grad(lambda v: losses.generator_loss("minimax", v))(f)
  g_ns = jax.grad(lambda v: losses.generator_loss("non_saturating", v))(f)
  assert abs(float(g_mm[0])) < 1e-4 < 0.9 < abs(float(g_ns[0]))


def test_unknown_kind():
  with pytest.raises(ValueError, match="unknown GAN loss"):
    losses.generator_loss("wasserstien", FAKE)


@pytest.mark.parametrize("w_norm", [0.3, 1.0, 2.5])
def test_gradient_penalty_of_a_linear_critic(w_norm):
  rng = np.random.default_rng(0)
  w = rng.normal(size=(4, 4, 2)).astype(np.float32)
  w *= w_norm / np.linalg.norm(w)
  d_fn = lambda x: jnp.einsum("bhwc,hwc->b", x, w) + 3.0
  real = jnp.asarray(rng.normal(size=(6, 4, 4, 2)), jnp.float32)
  fake = jnp.asarray(rng.normal(size=(6, 4, 4, 2)), jnp.float32)
  gp = jax.jit(lambda r: losses.gradient_penalty(d_fn, real, fake, r))(jax.random.key(1))
  np.testing.assert_allclose(gp, 10.0 * (w_norm - 1.0) ** 2, rtol=1e-4, atol=1e-6)


def test_gradient_penalty_interpolates_per_example():
  """Critic D(x) = ||x||^2 / 2 has gradient x: the penalty is a function of where x_hat lies."""
  real = jnp.ones((5, 3))
  fake = jnp.zeros((5, 3))
  rng = jax.random.key(3)
  eps = np.asarray(jax.random.uniform(rng, (5, 1)))
  gp = losses.gradient_penalty(lambda x: 0.5 * jnp.sum(x * x, -1), real, fake, rng, weight=2.0)
  expected = 2.0 * np.mean((eps[:, 0] * math.sqrt(3.0) - 1.0) ** 2)
  np.testing.assert_allclose(gp, expected, rtol=1e-5)
  assert len(np.unique(eps)) == 5


def test_r1_penalty_by_hand():
  w = jnp.array([3.0, 4.0])
  r1 = losses.r1_penalty(lambda x: x @ w, jnp.ones((4, 2)), gamma=0.2)
  np.testing.assert_allclose(r1, 0.1 * 25.0, rtol=1e-6)


def test_clip_weights_bounds_every_leaf():
  params = {"a": jnp.array([-3.0, 0.005, 2.0]), "b": {"c": jnp.full((2, 2), -0.5)}}
  clipped = losses.clip_weights(params, 0.01)
  for leaf in jax.tree.leaves(clipped):
    assert float(jnp.max(jnp.abs(leaf))) <= 0.01
  np.testing.assert_allclose(clipped["a"], [-0.01, 0.005, 0.01])
