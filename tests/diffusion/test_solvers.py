"""Tests for jgen.diffusion.solvers.

Two kinds of reference: (1) float64 NumPy loops written straight from the
papers' update rules, driven by a smooth toy eps, and (2) the closed-form
optimal eps of a 1-D Gaussian mixture, for which the probability-flow ODE
carries N(0, I) onto the mixture: every solver must reproduce its weights,
means and spreads, and with many steps all solvers must land on the same
ODE solution from the same x_T.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.diffusion import ddim_sample, get_schedule
from jgen.diffusion.parameterization import alpha_sigma
from jgen.diffusion.solvers import (
    dpm_timesteps,
    dpmpp_2m_sample,
    euler_sample,
    heun_sample,
    karras_sigmas,
    schedule_sigmas,
)

T = 1000
BETAS = np.linspace(1e-4, 0.02, T)
ABAR = np.cumprod(1.0 - BETAS)

# The mixture: components 3 and 5-7 std apart, so nearest-mean assignment
# (split at +-1.5) misassigns < 0.2% of the mass.
W = np.array([0.3, 0.5, 0.2])
MU = np.array([-3.0, 0.0, 3.0])
S = np.array([0.4, 0.5, 0.45])
N = 4096

SAMPLERS = {
    "ddim": ddim_sample,
    "dpmpp_2m": dpmpp_2m_sample,
    "euler": euler_sample,
    "heun": heun_sample,
}


@pytest.fixture(scope="module")
def schedule():
  return get_schedule("linear", T)


def gmm_eps_fn(schedule):
  """eps*(x_t, t) = -sigma_t grad log p_t(x_t), p_t = sum_k w_k N(a mu_k, a^2 s_k^2 + b^2)."""

  def eps_fn(x, t):
    a, b = alpha_sigma(schedule, t, x)
    var = a**2 * S**2 + b**2
    d = x - a * MU
    log_r = jnp.log(W) - 0.5 * jnp.log(var) - 0.5 * d**2 / var
    r = jax.nn.softmax(log_r, axis=-1)
    return b * jnp.sum(r * d / var, axis=-1, keepdims=True)

  return eps_fn


@functools.partial(jax.jit, static_argnames=("name", "steps"))
def run_gmm(schedule, x_T, *, name, steps):
  return SAMPLERS[name](gmm_eps_fn(schedule), schedule, jax.random.PRNGKey(1), x_T.shape,
                        steps=steps, clip_denoised=False, x_T=x_T)


def mixture_stats(x):
  x = np.asarray(x)[:, 0]
  k = np.digitize(x, [-1.5, 1.5])
  return np.array([[np.mean(k == j), x[k == j].mean(), x[k == j].std()] for j in range(3)])


# Sampling error with N = 4096: weight SE <= 0.008, mean SE <= 0.016, std
# relative SE <= 2.5%. Discretization biases measured at these step counts
# (4 seeds): DDIM-50 means <= 0.05; Heun-20 means <= 0.045 (outer modes pushed
# out), stds <= +6%; Euler-50 means <= 0.09 (pulled in), stds <= +7%. DPM++(2M)
# returns D(x) at t_last = round(999 / 20) = 50, so each mode's spread is
# shrunk to s / sqrt(1 + sigma_edm(50)^2 / s^2) (the posterior-mean
# shrinkage of a Gaussian): its stds are checked against that value.
CASES = [
    # name, steps, weight tol, mean tol, relative std tol
    ("ddim", 50, 0.03, 0.08, 0.10),
    ("dpmpp_2m", 20, 0.03, 0.06, 0.10),
    ("heun", 20, 0.03, 0.08, 0.12),
    ("euler", 50, 0.03, 0.12, 0.12),
]


@pytest.mark.parametrize("name,steps,w_tol,mu_tol,s_tol", CASES)
def test_reproduces_gaussian_mixture(schedule, name, steps, w_tol, mu_tol, s_tol):
  x_T = jax.random.normal(jax.random.PRNGKey(0), (N, 1))
  x = run_gmm(schedule, x_T, name=name, steps=steps)
  assert np.all(np.isfinite(x))
  stats = mixture_stats(x)
  spread = S
  if name == "dpmpp_2m":
    t_last = dpm_timesteps(T, steps)[-1]
    sigma_last2 = (1.0 - ABAR[t_last]) / ABAR[t_last]
    spread = S / np.sqrt(1.0 + sigma_last2 / S**2)
  np.testing.assert_allclose(stats[:, 0], W, atol=w_tol)
  np.testing.assert_allclose(stats[:, 1], MU, atol=mu_tol)
  np.testing.assert_allclose(stats[:, 2], spread, rtol=s_tol)


def test_solvers_agree_with_ddim_on_the_ode(schedule):
  """One probability-flow ODE, one solution: many-step solvers agree from one x_T."""
  x_T = jax.random.normal(jax.random.PRNGKey(3), (512, 1))
  ref = np.asarray(run_gmm(schedule, x_T, name="dpmpp_2m", steps=500))[:, 0]
  heun = np.asarray(run_gmm(schedule, x_T, name="heun", steps=200))[:, 0]
  # Second-order solvers: measured max |heun-200 - dpm-500| <= 0.011 over 5 seeds
  # (dpm-500 vs heun-1000: 5e-4).
  np.testing.assert_allclose(heun, ref, atol=2e-2)
  # First-order solvers are off by O(1 / steps), most for the few points where
  # the flow splits between modes. Measured over 5 seeds: median <= 3e-3,
  # 99th percentile <= 0.03 (DDIM) and 0.05 (Euler), max <= 0.14. A point
  # sent to the wrong mode would be off by ~3.
  for name, q99_tol in (("ddim", 0.05), ("euler", 0.08)):
    x = np.asarray(run_gmm(schedule, x_T, name=name, steps=1000))[:, 0]
    err = np.abs(x - ref)
    assert np.median(err) < 5e-3, (name, np.median(err))
    assert np.quantile(err, 0.99) < q99_tol, (name, np.quantile(err, 0.99))
    assert err.max() < 0.3, (name, err.max())


# -- NumPy references of the update rules, driven by a smooth toy eps. --


def toy_eps_np(x, t):
  return np.tanh(x) * (1.0 + t[:, None] / T) + 0.1 * np.sin(3.0 * x)


def toy_eps_fn(x, t):
  return jnp.tanh(x) * (1.0 + t[:, None].astype(jnp.float32) / T) + 0.1 * jnp.sin(3.0 * x)


def dpmpp_2m_numpy(x, ts):
  """Lu et al. 2022b, Alg. 2 (midpoint form), final step to sigma = 0 first-order."""
  alpha, sigma = np.sqrt(ABAR[ts]), np.sqrt(1.0 - ABAR[ts])
  lam = np.log(alpha / sigma)
  d_prev = None
  for i, t in enumerate(ts):
    eps = toy_eps_np(x, np.full(x.shape[0], float(t)))
    d = (x - sigma[i] * eps) / alpha[i]
    if i == len(ts) - 1:
      return d
    h = lam[i + 1] - lam[i]
    if d_prev is None:
      d_eff = d
    else:
      r0 = (lam[i] - lam[i - 1]) / h
      d_eff = d + 0.5 * (d - d_prev) / r0
    x = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * np.expm1(-h) * d_eff
    d_prev = d


def karras_numpy(x_T, steps, heun):
  log_sig = np.log(np.sqrt((1.0 - ABAR) / ABAR))
  lo, hi = np.exp(log_sig[0])**(1 / 7), np.exp(log_sig[-1])**(1 / 7)
  sig = np.append((hi + np.linspace(0, 1, steps) * (lo - hi))**7, 0.0)

  def deriv(x, s):
    t = np.interp(np.log(s), log_sig, np.arange(T))
    return toy_eps_np(x / np.sqrt(1 + s**2), np.full(x.shape[0], t))

  x = x_T * np.sqrt(1 + sig[0]**2)
  for i in range(steps):
    d = deriv(x, sig[i])
    x_new = x + (sig[i + 1] - sig[i]) * d
    if heun and sig[i + 1] > 0:
      x_new = x + (sig[i + 1] - sig[i]) * 0.5 * (d + deriv(x_new, sig[i + 1]))
    x = x_new
  return x


@pytest.mark.parametrize("steps", [1, 2, 6])
def test_dpmpp_2m_matches_numpy(schedule, steps):
  x_T = np.random.default_rng(steps).standard_normal((8, 2))
  want = dpmpp_2m_numpy(x_T, dpm_timesteps(T, steps))
  got = jax.jit(lambda xT: dpmpp_2m_sample(toy_eps_fn, schedule, jax.random.PRNGKey(0), xT.shape,
                                           steps=steps, clip_denoised=False, x_T=xT))(x_T)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("heun", [False, True])
def test_karras_solvers_match_numpy(schedule, heun):
  steps = 5
  x_T = np.random.default_rng(7).standard_normal((8, 2))
  want = karras_numpy(x_T, steps, heun)
  sampler = heun_sample if heun else euler_sample
  got = jax.jit(lambda xT: sampler(toy_eps_fn, schedule, jax.random.PRNGKey(0), xT.shape,
                                   steps=steps, clip_denoised=False, x_T=xT))(x_T)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_dpm_timesteps_follow_diffusers():
  np.testing.assert_array_equal(dpm_timesteps(1000, 20)[:3], [999, 949, 899])
  np.testing.assert_array_equal(dpm_timesteps(1000, 20)[-1], 50)
  np.testing.assert_array_equal(dpm_timesteps(1000, 4, "leading"), [800, 600, 400, 200])
  np.testing.assert_array_equal(dpm_timesteps(1000, 4, "trailing"), [999, 749, 499, 249])
  np.testing.assert_array_equal(dpm_timesteps(10, 10, "trailing"), np.arange(9, -1, -1))
  np.testing.assert_array_equal(dpm_timesteps(10, 9), np.arange(9, 0, -1))
  with pytest.raises(ValueError, match="steps"):
    dpm_timesteps(10, 10, "linspace")
  with pytest.raises(ValueError, match="steps"):
    dpm_timesteps(10, 0)
  with pytest.raises(ValueError, match="spacing"):
    dpm_timesteps(10, 3, "uniform")


def test_karras_sigmas(schedule):
  sig = np.asarray(karras_sigmas(0.002, 80.0, 4))
  i = np.arange(4) / 3
  want = (80.0**(1 / 7) + i * (0.002**(1 / 7) - 80.0**(1 / 7)))**7
  np.testing.assert_allclose(sig, np.append(want, 0.0), rtol=1e-5)
  np.testing.assert_allclose(karras_sigmas(0.1, 5.0, 1), [5.0, 0.0], rtol=1e-6)
  grid = np.asarray(schedule_sigmas(schedule, 10))
  np.testing.assert_allclose(grid[[0, -2]], np.sqrt((1 - ABAR[[-1, 0]]) / ABAR[[-1, 0]]),
                             rtol=1e-5)
  assert np.all(np.diff(grid) < 0)


def test_timestep_dtypes_shapes_and_clipping(schedule):
  seen = []

  def eps_fn(x, t):
    seen.append(t.dtype)
    assert t.shape == (x.shape[0],)
    return 3.0 * x  # a poor model: D would leave [-1, 1] without clipping.

  shape = (2, 4, 4, 3)
  for sampler, dtype in ((dpmpp_2m_sample, jnp.int32), (euler_sample, jnp.float32),
                         (heun_sample, jnp.float32)):
    seen.clear()
    x = jax.jit(lambda rng, f=sampler: f(eps_fn, schedule, rng, shape, steps=3))(
        jax.random.PRNGKey(0))
    assert x.shape == shape and set(seen) == {jnp.dtype(dtype)}
    assert np.all(np.isfinite(x)) and np.max(np.abs(x)) <= 1.0 + 1e-5
  with pytest.raises(ValueError, match="rank"):
    euler_sample(eps_fn, schedule, jax.random.PRNGKey(0), (4,), steps=2)


def test_same_rng_same_start_as_ddim(schedule):
  """rng alone fixes x_T exactly as ddim_sample draws it."""
  rng = jax.random.PRNGKey(5)
  shape = (64, 1)
  x_T = jax.random.normal(jax.random.split(rng)[0], shape)
  eps_fn = gmm_eps_fn(schedule)
  for sampler in (dpmpp_2m_sample, heun_sample):
    a = sampler(eps_fn, schedule, rng, shape, steps=4, clip_denoised=False)
    b = sampler(eps_fn, schedule, rng, shape, steps=4, clip_denoised=False, x_T=x_T)
    np.testing.assert_array_equal(a, b)
