"""Tests for jgen.ops.schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.ops import schedules as sch

T = 100


@pytest.fixture(scope="module", params=["linear", "cosine"])
def schedule_and_betas(request):
  betas = sch._BETA_SCHEDULES[request.param](T)
  return sch.make_schedule(betas), betas


def test_linear_betas_endpoints_and_spacing():
  betas = sch.linear_beta_schedule(1000)
  assert betas.dtype == np.float64 and betas.shape == (1000,)
  assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
  np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) / 999)
  betas = sch.linear_beta_schedule(10, beta_start=0.1, beta_end=0.5)
  assert betas[0] == pytest.approx(0.1) and betas[-1] == pytest.approx(0.5)


def test_cosine_alpha_bar_follows_cos_squared():
  s, num = 0.008, 1000
  betas = sch.cosine_beta_schedule(num, s=s)
  assert betas.dtype == np.float64 and betas.shape == (num,)
  f = lambda t: np.cos((t / num + s) / (1 + s) * np.pi / 2)**2
  t = np.arange(1, num + 1)
  expected = f(t) / f(0)
  alphas_cumprod = np.cumprod(1.0 - betas)
  unclipped = betas < 0.999
  assert unclipped[:-1].all() and not unclipped[-1]
  np.testing.assert_allclose(alphas_cumprod[:-1], expected[:-1], rtol=1e-10)
  assert betas.max() == pytest.approx(0.999)
  assert sch.cosine_beta_schedule(num, max_beta=0.5).max() == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_beta_schedules_reject_bad_num_timesteps(bad):
  with pytest.raises(ValueError):
    sch.linear_beta_schedule(bad)
  with pytest.raises(ValueError):
    sch.cosine_beta_schedule(bad)


def test_schedule_tables_match_closed_forms(schedule_and_betas):
  schedule, betas = schedule_and_betas
  assert schedule.num_timesteps == T
  for leaf in jax.tree_util.tree_leaves(schedule):
    assert leaf.dtype == jnp.float32 and leaf.shape == (T,)
  abar = np.cumprod(1.0 - betas)
  abar_prev = np.concatenate([[1.0], abar[:-1]])
  post_var = betas * (1 - abar_prev) / (1 - abar)
  expected = {
      "betas": betas,
      "alphas_cumprod": abar,
      "alphas_cumprod_prev": abar_prev,
      "sqrt_alphas_cumprod": np.sqrt(abar),
      "sqrt_one_minus_alphas_cumprod": np.sqrt(1 - abar),
      "sqrt_recip_alphas_cumprod": 1 / np.sqrt(abar),
      "sqrt_recipm1_alphas_cumprod": np.sqrt(1 / abar - 1),
      "posterior_variance": post_var,
      "posterior_log_variance_clipped": np.log(np.r_[post_var[1], post_var[1:]]),
      "posterior_mean_coef1": betas * np.sqrt(abar_prev) / (1 - abar),
      "posterior_mean_coef2": (1 - abar_prev) * np.sqrt(1 - betas) / (1 - abar),
  }
  for name, value in expected.items():
    np.testing.assert_allclose(getattr(schedule, name), value, rtol=1e-5, err_msg=name)
  assert post_var[0] == 0.0


def test_posterior_matches_gaussian_conditioning(schedule_and_betas):
  """q(x_{t-1}|x_t,x_0) from Bayes' rule on q(x_{t-1}|x_0) q(x_t|x_{t-1})."""
  schedule, betas = schedule_and_betas
  abar = np.cumprod(1.0 - betas)
  t = np.array([1, 5, 50, T - 2])
  x0 = np.random.default_rng(0).uniform(-1, 1, (4, 3, 2, 1))
  x_t = np.random.default_rng(1).normal(size=(4, 3, 2, 1))
  col = lambda v: v[:, None, None, None]
  beta_t, abar_prev = col(betas[t]), col(abar[t - 1])
  precision = 1 / (1 - abar_prev) + (1 - beta_t) / beta_t
  var = 1 / precision
  mean = var * (np.sqrt(abar_prev) * x0 / (1 - abar_prev) + np.sqrt(1 - beta_t) * x_t / beta_t)
  got_mean, got_var, got_log_var = sch.q_posterior_mean_variance(
      schedule,
      jnp.asarray(x0, jnp.float32),
      jnp.asarray(x_t, jnp.float32),
      jnp.asarray(t, jnp.int32),
  )
  assert got_mean.shape == got_var.shape == got_log_var.shape == x0.shape
  np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got_var, np.broadcast_to(var, x0.shape), rtol=1e-4)
  np.testing.assert_allclose(np.exp(got_log_var), got_var, rtol=1e-4)


def test_posterior_at_t0_returns_x0_with_finite_log_variance(schedule_and_betas):
  schedule, _ = schedule_and_betas
  x0 = jnp.full((2, 2, 2, 1), 0.3)
  x_t = jnp.full((2, 2, 2, 1), -2.0)
  mean, var, log_var = sch.q_posterior_mean_variance(schedule, x0, x_t, jnp.zeros((2,), jnp.int32))
  np.testing.assert_allclose(mean, x0, atol=1e-6)
  np.testing.assert_allclose(var, 0.0)
  assert np.all(np.isfinite(log_var))


def test_get_schedule_names_kwargs_and_errors():
  s = sch.get_schedule("linear", 10, beta_start=0.001, beta_end=0.1)
  np.testing.assert_allclose(s.betas, np.linspace(0.001, 0.1, 10), rtol=1e-6)
  c = sch.get_schedule("cosine", 10)
  np.testing.assert_allclose(c.betas, sch.cosine_beta_schedule(10), rtol=1e-6)
  with pytest.raises(ValueError, match="cosine.*linear"):
    sch.get_schedule("sigmoid", 10)


@pytest.mark.parametrize("betas", [[], [[0.1]], [0.0, 0.1], [0.1, 1.5]])
def test_make_schedule_rejects_bad_betas(betas):
  with pytest.raises(ValueError):
    sch.make_schedule(betas)


def test_schedule_is_a_pytree_usable_in_jit():
  schedule = sch.get_schedule("linear", 10)
  assert len(jax.tree_util.tree_leaves(schedule)) == 11
  f = jax.jit(lambda s: s.alphas_cumprod[s.num_timesteps - 1] * 2.0)
  np.testing.assert_allclose(f(schedule), 2.0 * schedule.alphas_cumprod[-1])
  doubled = jax.tree_util.tree_map(lambda a: 2 * a, schedule)
  assert isinstance(doubled, sch.Schedule)


def test_q_sample_marginal_mean_and_variance():
  schedule = sch.get_schedule("linear", T)
  x0 = jnp.array([0.9, -0.5, 0.1, 1.0]).reshape(4, 1, 1, 1) * jnp.ones((4, 2, 2, 1))
  t = jnp.array([0, 10, 50, T - 1], jnp.int32)
  noise = jnp.asarray(np.random.default_rng(0).normal(size=(20000,) + x0.shape), jnp.float32)
  samples = jax.vmap(lambda n: sch.q_sample(schedule, x0, t, n))(noise)
  abar = np.asarray(schedule.alphas_cumprod)[np.asarray(t)][:, None, None, None]
  np.testing.assert_allclose(samples.mean(0), np.sqrt(abar) * x0, atol=0.03)
  expected_var = np.broadcast_to(1 - abar, x0.shape)
  np.testing.assert_allclose(samples.var(0), expected_var, rtol=0.05, atol=1e-4)


def test_predictions_invert_q_sample(schedule_and_betas):
  schedule, _ = schedule_and_betas
  gen = np.random.default_rng(3)
  x0 = jnp.asarray(gen.uniform(-1, 1, (5, 4, 4, 3)), jnp.float32)
  noise = jnp.asarray(gen.normal(size=x0.shape), jnp.float32)
  t = jnp.array([0, 1, 10, 60, T - 5], jnp.int32)
  x_t = sch.q_sample(schedule, x0, t, noise)
  np.testing.assert_allclose(sch.predict_x0_from_eps(schedule, x_t, t, noise), x0, atol=2e-3)
  np.testing.assert_allclose(sch.predict_eps_from_x0(schedule, x_t, t, x0), noise, atol=2e-3)


def test_shape_checks():
  schedule = sch.get_schedule("linear", 10)
  x = jnp.zeros((2, 3, 3, 1))
  with pytest.raises(AssertionError):
    sch.q_sample(schedule, x, jnp.zeros((3,), jnp.int32), x)
  with pytest.raises(AssertionError):
    sch.q_sample(schedule, x, jnp.zeros((2,), jnp.int32), jnp.zeros((2, 3, 3, 2)))
  with pytest.raises(AssertionError):
    sch.q_sample(schedule, x, jnp.zeros((2,), jnp.float32), x)


def test_scaled_linear_is_stable_diffusions_schedule():
  betas = np.asarray(sch.get_schedule("scaled_linear", 1000).betas, np.float64)
  # diffusers' "scaled_linear": linspace(sqrt(0.00085), sqrt(0.012), 1000) ** 2
  want = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
  np.testing.assert_allclose(betas, want, rtol=1e-6)
  assert abs(float(np.prod(1 - want)) - float(np.asarray(
      sch.get_schedule("scaled_linear", 1000).alphas_cumprod)[-1])) < 1e-6
