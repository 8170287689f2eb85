"""Tests for jgen.ops.processes (and `Schedule` as a process) against float64 NumPy.

Every process x_t = a(t) x0 + s(t) eps has its (a, s) and derivatives (a', s') written here in
closed form (`closed_form`): DDPM's linear chain (tables at integer t; log sigma interpolated
linearly between integer steps at fractional t), score_sde's VP and VE SDEs, EDM (a = 1, s = t)
and the linear path (a = 1 - t, s = t). Checked against them:

* the marginal, sigma = s / a, its inverse `time_of_sigma`, a^2 + s^2 = 1 for VP processes;
* `marginal_derivative` (forward-mode, or closed form) against the hand-written derivatives;
* `convert` between every pair of 'eps', 'x0', 'v' and 'velocity': the reference solves the
  2x2 linear system x = a x0 + s eps, pred = c0 x0 + c1 eps for (x0, eps) in float64 and maps
  it with the target's coefficients (v = (a eps - s x0) / sqrt(a^2 + s^2), velocity =
  a' x0 + s' eps); `target` and `noised` likewise;
* the SDE: (f, g^2) = (a' / a, 2 s^2 (s' / s - a' / a)) (for VP also score_sde's (-beta / 2,
  beta)), the probability-flow drift f x + g^2 eps / (2 s) for every kind of prediction and the
  reverse drift f x + g^2 eps / s;
* the prior's standard deviation, and the clear error of the linear path's infinite sigma_max.

Tolerances: the code runs in float32 against float64 references. Coefficients and conversions
are compared with rtol 1e-4 and atol 1e-5 (a few float32 ulps times the conversion's
condition number at the chosen times, which avoid a or s ~ 0); derivatives of the
interpolated DDPM chain, a float32 difference of neighbouring log sigmas, with rtol 1e-3.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.diffusion.sampler_table import check_sampler
from jgen.ops.processes import EDM, PREDICTIONS, VE, VP, Linear
from jgen.ops.schedules import get_schedule

T = 1000
ABAR = np.cumprod(1.0 - np.linspace(1e-4, 0.02, T))
LOG_SIGMA = 0.5 * np.log(1.0 / ABAR - 1.0)
VP_B0, VP_B1 = 0.1, 20.0
VE_S0, VE_S1 = 0.01, 50.0

# name -> (the process, times away from a ~ 0 and s ~ 0)
CASES = {
    "schedule_int": (lambda: get_schedule("linear", T), np.array([3, 40, 250, 500, 900])),
    "schedule_frac": (lambda: get_schedule("linear", T),
                      np.array([10.25, 137.5, 500.75, 900.5])),
    "vp": (lambda: VP(beta_min=VP_B0, beta_max=VP_B1), np.array([0.05, 0.3, 0.6, 0.9])),
    "ve": (lambda: VE(sigma_min=VE_S0, sigma_max=VE_S1), np.array([0.1, 0.4, 0.7, 0.95])),
    "edm": (lambda: EDM(sigma_min=0.002, sigma_max=80.0), np.array([0.05, 0.5, 2.0, 10.0])),
    "linear": (Linear, np.array([0.05, 0.3, 0.7, 0.95])),
}
# Processes with a derivative at their test times (the chain's is undefined at integer t, where
# the interpolation of log sigma has a kink).
DIFFERENTIABLE = [name for name in CASES if name != "schedule_int"]


def closed_form(name, t):
  """(a, s, a', s') in float64 at times t (a', s' None where undefined)."""
  t = np.asarray(t)
  if name == "schedule_int":
    return np.sqrt(ABAR[t]), np.sqrt(1.0 - ABAR[t]), None, None
  if name == "schedule_frac":
    sigma = np.exp(np.interp(t, np.arange(T), LOG_SIGMA))
    slope = np.diff(LOG_SIGMA)[np.floor(t).astype(int)]  # d log sigma / dt on t's interval
    a = 1.0 / np.sqrt(1.0 + sigma**2)
    s = sigma * a
    # a = (1 + sigma^2)^(-1/2): a' = -a^3 sigma sigma'; s = sigma a: s' = sigma' a + sigma a'.
    dsigma = sigma * slope
    da = -a**3 * sigma * dsigma
    return a, s, da, dsigma * a + sigma * da
  if name == "vp":
    a = np.exp(-0.25 * t**2 * (VP_B1 - VP_B0) - 0.5 * t * VP_B0)
    s = np.sqrt(1.0 - a**2)
    da = -0.5 * (VP_B0 + t * (VP_B1 - VP_B0)) * a
    return a, s, da, -a * da / s
  if name == "ve":
    s = VE_S0 * (VE_S1 / VE_S0)**t
    return np.ones_like(t), s, np.zeros_like(t), s * np.log(VE_S1 / VE_S0)
  if name == "edm":
    return np.ones_like(t), t.astype(np.float64), np.zeros_like(t), np.ones_like(t)
  assert name == "linear"
  return 1.0 - t, t.astype(np.float64), -np.ones_like(t), np.ones_like(t)


def coefficients(kind, a, s, da, ds):
  """(c0, c1) of a prediction of `kind` = c0 x0 + c1 eps."""
  if kind == "eps":
    return np.zeros_like(a), np.ones_like(a)
  if kind == "x0":
    return np.ones_like(a), np.zeros_like(a)
  if kind == "v":
    r = np.sqrt(a**2 + s**2)
    return -s / r, a / r
  return da, ds


def solve_x0_eps(x, pred, kind, a, s, da, ds):
  """(x0, eps) with x = a x0 + s eps and pred = c0 x0 + c1 eps, float64 (Cramer's rule)."""
  c0, c1 = (c[:, None] for c in coefficients(kind, a, s, da, ds))
  a, s = a[:, None], s[:, None]
  det = a * c1 - s * c0
  return (c1 * x - s * pred) / det, (a * pred - c0 * x) / det


def _t(name, t):
  return jnp.asarray(t, jnp.int32 if name == "schedule_int" else jnp.float32)


def _random(shape, seed):
  """float32-representable standard normals, as float64."""
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("name", list(CASES))
def test_marginal_sigma_and_its_inverse(name):
  make, t = CASES[name]
  process = make()
  a, s, _, _ = closed_form(name, t)
  got_a, got_s = process.marginal(_t(name, t))
  np.testing.assert_allclose(got_a, a, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got_s, s, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(process.sigma(_t(name, t)), s / a, rtol=1e-4)
  back = process.time_of_sigma(jnp.asarray(s / a, jnp.float32))
  np.testing.assert_allclose(back, t, rtol=1e-4, atol=2e-3 if "schedule" in name else 1e-5)
  np.testing.assert_allclose(process.time_of_sigma(process.sigma(_t(name, t))), t, rtol=1e-4,
                             atol=2e-3 if "schedule" in name else 1e-5)
  if process.variance_preserving:
    np.testing.assert_allclose(np.square(got_a) + np.square(got_s), 1.0, atol=1e-6)


def test_vp_processes_preserve_variance_on_a_fine_grid():
  """a^2 + s^2 = 1 for VP over its whole time range and for DDPM's chain at every step."""
  vp = VP()
  a, s = vp.marginal(jnp.linspace(vp.t_min, vp.t_max, 101))
  np.testing.assert_allclose(np.square(a) + np.square(s), 1.0, atol=2e-6)
  chain = get_schedule("linear", T)
  a, s = chain.marginal(jnp.arange(T))
  np.testing.assert_allclose(np.square(a) + np.square(s), 1.0, atol=2e-6)
  a, s = chain.marginal(jnp.linspace(0.0, T - 1.0, 777))
  np.testing.assert_allclose(np.square(a) + np.square(s), 1.0, atol=2e-6)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_marginal_derivative(name):
  make, t = CASES[name]
  _, _, da, ds = closed_form(name, t)
  got_da, got_ds = make().marginal_derivative(_t(name, t))
  rtol = 1e-3 if "schedule" in name else 1e-4
  np.testing.assert_allclose(got_da, da, rtol=rtol, atol=1e-7)
  np.testing.assert_allclose(got_ds, ds, rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("name", list(CASES))
def test_convert_every_pair(name):
  make, t = CASES[name]
  process = make()
  coefs = closed_form(name, t)
  kinds = PREDICTIONS if coefs[2] is not None else ("eps", "x0", "v")
  x = _random((len(t), 3), 0)
  pred = _random((len(t), 3), 1)
  tt = _t(name, t)
  checked = 0
  for source in kinds:
    x0, eps = solve_x0_eps(x, pred, source, *coefs)
    for target in kinds:
      c0, c1 = (c[:, None] for c in coefficients(target, *coefs))
      want = c0 * x0 + c1 * eps
      got = process.convert(jnp.asarray(x, jnp.float32), tt, jnp.asarray(pred, jnp.float32),
                            source=source, target=target)
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"{source}->{target}")
      checked += 1
  assert checked == len(kinds)**2


@pytest.mark.parametrize("name", list(CASES))
def test_noised_and_target(name):
  make, t = CASES[name]
  process = make()
  coefs = closed_form(name, t)
  a, s = coefs[0][:, None], coefs[1][:, None]
  x0, eps = _random((len(t), 2, 2), 2), _random((len(t), 2, 2), 3)
  tt = _t(name, t)
  f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
  np.testing.assert_allclose(process.noised(f32(x0), tt, f32(eps)), a[..., None] * x0
                             + s[..., None] * eps, rtol=1e-4, atol=1e-5)
  kinds = PREDICTIONS if coefs[2] is not None else ("eps", "x0", "v")
  for kind in kinds:
    c0, c1 = (c[:, None, None] for c in coefficients(kind, *coefs))
    np.testing.assert_allclose(process.target(f32(x0), f32(eps), tt, kind),
                               c0 * x0 + c1 * eps, rtol=1e-4, atol=1e-5, err_msg=kind)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_sde_coefficients_and_drifts(name):
  make, t = CASES[name]
  process = make()
  a, s, da, ds = closed_form(name, t)
  f = da / a
  g2 = 2.0 * s**2 * (ds / s - f)
  got_f, got_g2 = process.sde_coefficients(_t(name, t))
  rtol = 1e-3 if "schedule" in name else 1e-4
  np.testing.assert_allclose(got_f, f, rtol=rtol, atol=1e-6)
  np.testing.assert_allclose(got_g2, g2, rtol=rtol, atol=1e-6)
  if name == "vp":  # score_sde's VP SDE: f = -beta(t) / 2, g^2 = beta(t)
    beta = VP_B0 + t * (VP_B1 - VP_B0)
    np.testing.assert_allclose(f, -0.5 * beta, rtol=1e-12)
    np.testing.assert_allclose(g2, beta, rtol=1e-12)
  x = _random((len(t), 3), 4)
  pred = _random((len(t), 3), 5)
  tt = _t(name, t)
  for kind in PREDICTIONS:
    x0, eps = solve_x0_eps(x, pred, kind, a, s, da, ds)
    ode = f[:, None] * x + g2[:, None] * eps / (2.0 * s[:, None])
    # The same drift as a' x0 + s' eps (the module docstring's two forms).
    np.testing.assert_allclose(ode, da[:, None] * x0 + ds[:, None] * eps, rtol=1e-9, atol=1e-9)
    got = process.ode_drift(jnp.asarray(x, jnp.float32), tt, jnp.asarray(pred, jnp.float32),
                            kind)
    np.testing.assert_allclose(got, ode, rtol=rtol, atol=1e-5, err_msg=kind)
    reverse = f[:, None] * x + g2[:, None] * eps / s[:, None]
    got = process.reverse_sde_drift(jnp.asarray(x, jnp.float32), tt,
                                    jnp.asarray(pred, jnp.float32), kind)
    np.testing.assert_allclose(got, reverse, rtol=rtol, atol=1e-5, err_msg=kind)


@pytest.mark.parametrize("name", ["schedule_int", "vp", "ve", "edm", "linear"])
def test_prior_std(name):
  process = CASES[name][0]()
  n = 200_000
  x = process.prior(jax.random.key(0), (n, 1))
  assert x.shape == (n, 1) and x.dtype == jnp.float32
  x = np.asarray(x, np.float64)
  want = {"schedule_int": 1.0, "vp": 1.0, "ve": VE_S1, "edm": 80.0, "linear": 1.0}[name]
  assert process.prior_std == want
  # Standard errors: mean want / sqrt(n) (0.22%), std want / sqrt(2 n) (0.16%); 5 of each.
  assert abs(x.mean()) < 5 * want / np.sqrt(n)
  assert abs(x.std() / want - 1.0) < 5 / np.sqrt(2 * n)


def test_sigma_ranges():
  lo, hi = VE(sigma_min=VE_S0, sigma_max=VE_S1).sigma_range()
  np.testing.assert_allclose([lo, hi], [VE_S0, VE_S1], rtol=1e-5)
  lo, hi = EDM(sigma_min=0.002, sigma_max=80.0).sigma_range()
  np.testing.assert_allclose([lo, hi], [0.002, 80.0], rtol=1e-6)
  a, s, _, _ = closed_form("vp", np.array([1e-3, 1.0]))
  np.testing.assert_allclose(VP().sigma_range(), s / a, rtol=1e-4)
  np.testing.assert_allclose(get_schedule("linear", T).sigma_range(),
                             np.exp(LOG_SIGMA[[0, -1]]), rtol=1e-5)


def test_linear_path_has_no_finite_sigma_max():
  with pytest.raises(ValueError, match="ode_euler"):
    Linear().sigma_range()
  for name in ("euler", "heun", "edm"):
    with pytest.raises(ValueError, match="ode_euler"):
      check_sampler(name, Linear())
  check_sampler("ode_euler", Linear())


def test_unknown_prediction_kinds_are_rejected():
  x = jnp.zeros((2, 3))
  t = jnp.array([0.2, 0.5])
  with pytest.raises(ValueError, match="velocity"):
    Linear().convert(x, t, x, source="score", target="eps")
  with pytest.raises(ValueError, match="velocity"):
    Linear().convert(x, t, x, source="eps", target="noise")
  with pytest.raises(ValueError, match="velocity"):
    VP().target(x, x, t, "score")
