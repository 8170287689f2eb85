"""Samplers, losses and training-time distributions of the continuous processes, against closed
forms and float64 NumPy.

* A 1-D Gaussian mixture p(x0) = sum_k w_k N(mu_k, s_k^2) has a closed-form optimal denoiser
  on every process x_t = a x0 + s eps: per component x_t ~ N(a mu_k, a^2 s_k^2 + s^2), the
  responsibilities r_k(x_t) and E[x0 | x_t] = sum_k r_k (mu_k + a s_k^2 / (a^2 s_k^2 + s^2)
  (x_t - a mu_k)). Driven by it (prediction 'x0'), the ODE samplers in t (`ode_sample`:
  Euler, Heun, midpoint on Linear, VP, VE and EDM), the Karras sigma-space samplers ('heun',
  'euler', and 'edm' with churn, on VP, VE, EDM and DDPM's chain) must reproduce the mixture's
  weights, means and spreads (tolerances as in test_solvers.py: sampling error of N = 4096
  plus the discretization bias measured at these step counts).
* VP and EDM are one ODE in two coordinates: from the same x_T (scaled by 1 / a(1)), a fine
  ode_heun in VP's t and heun_sample on EDM(sigma(t_min), sigma(1)) end at the same samples.
* `edm_sample` reduces to `heun_sample` (no churn) and `euler_sample` (first order) bitwise;
  churn changes the samples and still gives the mixture.
* The ODE samplers' updates against a float64 NumPy loop on a toy model; `ode_times` against
  the SD3 shift formula.
* `sample_times` (logit-normal moments, SD3's 'mode' formula on the same u, 'uniform'), EDM's
  preconditioning and loss weight (Table 1, float64), the EDM objective's effective weight
  lambda c_out^2 = 1 (its loss equals the unweighted error of the raw network against
  (x0 - c_skip x) / c_out), and `continuous_loss` reproduced in NumPy from the split keys.
* The sampler table: which names run on which process, with clear errors.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.diffusion import edm as edm_lib
from jgen.diffusion.flow_matching import FlowMatchingObjective, sample_times
from jgen.diffusion.losses import continuous_loss
from jgen.diffusion.ode import ode_sample, ode_times
from jgen.diffusion.sampler_table import DISCRETE, SAMPLERS, check_sampler, run_sampler
from jgen.diffusion.solvers import edm_sample, heun_sample
from jgen.ops.processes import EDM, VE, VP, Linear
from jgen.ops.schedules import get_schedule

# The mixture of test_solvers.py: modes 5-7 std apart, split at +-1.5 (< 0.2% misassigned).
W = np.array([0.3, 0.5, 0.2])
MU = np.array([-3.0, 0.0, 3.0])
S = np.array([0.4, 0.5, 0.45])
N = 4096

PROCESSES = {
    "linear": Linear(),
    "vp": VP(),
    "ve": VE(),
    "edm": EDM(),
}


def gmm_x0_fn(process):
  """E[x0 | x_t] of the mixture at process time t (x [B, 1], t [B])."""

  def x0_fn(x, t):
    a, s = process.marginal(t)
    a, s = a[:, None], s[:, None]
    var = a**2 * S**2 + s**2
    d = x - a * MU
    r = jax.nn.softmax(jnp.log(W) - 0.5 * jnp.log(var) - 0.5 * d**2 / var, axis=-1)
    return jnp.sum(r * (MU + a * S**2 / var * d), axis=-1, keepdims=True)

  return x0_fn


def mixture_stats(x):
  x = np.asarray(x)[:, 0]
  k = np.digitize(x, [-1.5, 1.5])
  return np.array([[np.mean(k == j), x[k == j].mean(), x[k == j].std()] for j in range(3)])


def assert_mixture(x, w_tol=0.03, mu_tol=0.08, s_tol=0.12):
  assert np.all(np.isfinite(x))
  stats = mixture_stats(x)
  np.testing.assert_allclose(stats[:, 0], W, atol=w_tol)
  np.testing.assert_allclose(stats[:, 1], MU, atol=mu_tol)
  np.testing.assert_allclose(stats[:, 2], S, rtol=s_tol)


@functools.partial(jax.jit, static_argnames=("name", "options"))
def run_gmm(process, x_T, *, name, options=()):
  return run_sampler(name, gmm_x0_fn(process), process, jax.random.key(1), x_T.shape,
                     prediction="x0", clip_denoised=False, x_T=x_T, **dict(options))


def prior_noise(process, seed=0):
  return process.prior_std * jax.random.normal(jax.random.key(seed), (N, 1))


# Measured over 3 seeds at these settings (weight / mean / relative std errors): linear Euler-50
# <= 0.014 / 0.043 / 0.035; every second-order case <= 0.018 / 0.055 / 0.072; VE Euler-300
# 0.018 / 0.054 / 0.089; EDM Euler-50 (shift 0.02) 0.011 / 0.038 / 0.026. EDM's uniform grid in
# t = sigma would leave a single step below sigma ~ 1, so its runs shift the grid to low noise.
ODE_CASES = [
    ("linear", "ode_euler", 50, 1.0),
    ("linear", "ode_heun", 10, 1.0),
    ("linear", "ode_midpoint", 10, 1.0),
    ("vp", "ode_euler", 100, 1.0),
    ("vp", "ode_heun", 30, 1.0),
    ("vp", "ode_midpoint", 30, 1.0),
    ("ve", "ode_euler", 300, 1.0),
    ("ve", "ode_heun", 50, 1.0),
    ("ve", "ode_midpoint", 50, 1.0),
    ("edm", "ode_euler", 50, 0.02),
    ("edm", "ode_heun", 20, 0.05),
    ("edm", "ode_midpoint", 20, 0.05),
]


@pytest.mark.parametrize("process_name,name,steps,shift", ODE_CASES)
def test_ode_samplers_reproduce_the_mixture(process_name, name, steps, shift):
  process = PROCESSES[process_name]
  x = run_gmm(process, prior_noise(process), name=name,
              options=(("steps", steps), ("shift", shift)))
  assert_mixture(x)


# Euler-Maruyama on the reverse SDE needs more steps than the ODE (its error is O(sqrt(dt)) in
# the noise); 'edm' shifts the grid to low noise as above.
SDE_CASES = [
    ("linear", 200, 1.0),
    ("vp", 200, 1.0),
    ("edm", 200, 0.05),
]


@pytest.mark.parametrize("process_name,steps,shift", SDE_CASES)
def test_reverse_sde_sampler_reproduces_the_mixture(process_name, steps, shift):
  process = PROCESSES[process_name]
  x = run_gmm(process, prior_noise(process), name="sde_euler",
              options=(("steps", steps), ("shift", shift)))
  assert_mixture(x)


KARRAS = {**PROCESSES, "ddpm_chain": get_schedule("linear", 1000)}
del KARRAS["linear"]
HEUN = (("steps", 40),)
CHURN = (("steps", 40), ("s_churn", 10.0))


# Heun-40 (Heun-20 measured <= 0.019 / 0.043 / 0.069 in test_solvers.py); 'edm' with churn 10
# over 40 steps (gamma = 0.25 at every level): measured <= 0.006 / 0.025 / 0.048. Euler (EDM
# only: it covers every sigma-space name on EDM) with 60 steps.
@pytest.mark.parametrize("process_name", list(KARRAS))
@pytest.mark.parametrize("name,options", [
    ("heun", HEUN),
    ("edm", CHURN),
])
def test_karras_samplers_reproduce_the_mixture(process_name, name, options):
  process = KARRAS[process_name]
  assert_mixture(run_gmm(process, prior_noise(process), name=name, options=options))


def test_euler_on_edm_reproduces_the_mixture():
  process = PROCESSES["edm"]
  assert_mixture(run_gmm(process, prior_noise(process), name="euler",
                         options=(("steps", 60),)), mu_tol=0.12)


def test_vp_and_edm_are_one_ode():
  """x_t = a x0 + s eps in VP's time is x = x_t / a = x0 + sigma eps in EDM's: the same
  trajectories, so both end at the same denoised points from the same start."""
  vp = VP()
  a1, _ = vp.marginal(jnp.float32(vp.t_max))
  lo, hi = vp.sigma_range()
  edm = EDM(sigma_min=float(lo), sigma_max=float(hi))
  x_T = jax.random.normal(jax.random.key(3), (512, 1))
  key = jax.random.key(0)
  x_vp = jax.jit(lambda x: ode_sample(gmm_x0_fn(vp), vp, key, x.shape, prediction="x0",
                                      steps=400, method="heun", x_T=x))(x_T)
  x_edm = jax.jit(lambda x: heun_sample(gmm_x0_fn(edm), edm, key, x.shape, prediction="x0",
                                        steps=200, clip_denoised=False, x_T=x))(x_T / a1)
  # Both are second order: measured max |difference| <= 0.009 over 3 seeds (0.0022 at 1000 / 400
  # steps); a point sent to another mode would be ~3 off.
  np.testing.assert_allclose(x_vp, x_edm, atol=0.03)
  assert np.std(np.asarray(x_vp)) > 1.0  # the samples are spread over the modes


def test_edm_sample_special_cases_and_churn():
  """Algorithm 2 without churn is Algorithm 1 (`heun_sample`) and without Heun's correction
  `euler_sample`, bitwise; churn moves the samples but not their distribution."""
  process = PROCESSES["edm"]
  x_T = prior_noise(process, seed=4)
  heun = run_gmm(process, x_T, name="heun", options=HEUN)
  np.testing.assert_array_equal(run_gmm(process, x_T, name="edm", options=HEUN), heun)
  fn = gmm_x0_fn(process)
  common = dict(prediction="x0", steps=60, clip_denoised=False, x_T=x_T)
  np.testing.assert_array_equal(
      jax.jit(lambda r: edm_sample(fn, process, r, x_T.shape, second_order=False, **common))(
          jax.random.key(1)),
      run_gmm(process, x_T, name="euler", options=(("steps", 60),)))
  churned = run_gmm(process, x_T, name="edm", options=CHURN)
  assert np.mean(np.abs(np.asarray(churned) - np.asarray(heun))) > 0.05
  assert_mixture(churned)


# -- The update rules against float64 NumPy, on a smooth toy model. --


def toy_velocity(x, t):
  return np.tanh(x) * (1.0 + t[:, None]) - 0.3 * np.cos(2.0 * x)


def toy_velocity_fn(x, t):
  return jnp.tanh(x) * (1.0 + t[:, None]) - 0.3 * jnp.cos(2.0 * x)


def ode_numpy(x, ts, method, ends_clean, final=None):
  """Euler / Heun / midpoint in t (Heun's last step Euler when the path ends on data), then
  `final(x, t_end)` (the x0 estimate) when it does not."""
  steps = len(ts) - 1
  for i in range(steps):
    t, t_next = ts[i], ts[i + 1]
    dt = t_next - t
    v = lambda y, tt: toy_velocity(y, np.full(len(y), tt))  # noqa: E731
    d = v(x, t)
    if method == "euler" or (method == "heun" and ends_clean and i == steps - 1):
      x = x + dt * d
    elif method == "heun":
      x = x + dt * 0.5 * (d + v(x + dt * d, t_next))
    else:
      x = x + dt * v(x + 0.5 * dt * d, t + 0.5 * dt)
  return x if final is None else final(x, ts[-1])


@pytest.mark.parametrize("method", ["euler", "heun", "midpoint"])
def test_ode_sample_matches_numpy(method):
  steps, shift = 4, 3.0
  x_T = np.random.default_rng(0).standard_normal((6, 2))
  u = np.linspace(1.0, 0.0, steps + 1)
  u = shift * u / (1.0 + (shift - 1.0) * u)  # SD3's shift, Esser et al. 2024, Eq. 23
  # The linear path [0, 1]: ends on the data.
  got = ode_sample(toy_velocity_fn, Linear(), jax.random.key(0), x_T.shape, steps=steps,
                   method=method, shift=shift, x_T=jnp.asarray(x_T, jnp.float32))
  np.testing.assert_allclose(got, ode_numpy(x_T, u, method, True), rtol=1e-5, atol=1e-5)
  # EDM on [0.5, 4] (a = 1, s = t): u = x0 + s' eps with s' = 1, so the returned x0 estimate
  # at t_min is x - t u.
  edm = EDM(sigma_min=0.5, sigma_max=4.0)
  ts = 0.5 + 3.5 * u
  np.testing.assert_allclose(ode_times(edm, steps, shift=shift), ts, rtol=1e-6)
  want = ode_numpy(4.0 * x_T, ts, method, False,
                   final=lambda x, t: x - t * toy_velocity(x, np.full(len(x), t)))
  got = ode_sample(toy_velocity_fn, edm, jax.random.key(0), x_T.shape, steps=steps,
                   method=method, shift=shift, x_T=jnp.asarray(4.0 * x_T, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def toy_eps(x, s):
  """A smooth, contracting eps model at noise level s (s [B])."""
  return s[:, None] * x / (s[:, None]**2 + 0.25) + 0.05 * np.sin(3.0 * x)


def toy_eps_fn(x, s):
  return s[:, None] * x / (s[:, None]**2 + 0.25) + 0.05 * jnp.sin(3.0 * x)


def edm_numpy(x, sigmas, step_rng, *, s_churn, s_tmin, s_tmax, s_noise):
  """Karras et al. (2022), Algorithm 2 on the EDM process (a = 1, t = sigma), the churn noise
  of step i drawn from fold_in(step_rng, i)."""
  steps = len(sigmas) - 1
  eps = lambda y, s: toy_eps(y, np.full(len(y), s))  # noqa: E731
  for i in range(steps):
    s, s_next = sigmas[i], sigmas[i + 1]
    gamma = min(s_churn / steps, np.sqrt(2.0) - 1.0) if s_tmin <= s <= s_tmax else 0.0
    s_hat = s * (1.0 + gamma)
    z = np.asarray(jax.random.normal(jax.random.fold_in(step_rng, i), x.shape), np.float64)
    x_hat = x + np.sqrt(s_hat**2 - s**2) * s_noise * z
    d = eps(x_hat, s_hat)
    x = x_hat + (s_next - s_hat) * d
    if s_next > 0:
      x = x_hat + (s_next - s_hat) * 0.5 * (d + eps(x, s_next))
  return x


def test_edm_sample_with_churn_matches_algorithm_2():
  """Churn on the levels in [s_tmin, s_tmax] only. Compiled at XLA's default optimization level
  (the tests' default is 0): there sqrt(s_hat^2 - s^2), contracted into an FMA, was NaN at the
  levels outside the window (gamma = 0)."""
  steps, lo, hi = 6, 0.02, 20.0
  process = EDM(sigma_min=lo, sigma_max=hi)
  i = np.arange(steps) / (steps - 1)
  sigmas = np.append((hi**(1 / 7) + i * (lo**(1 / 7) - hi**(1 / 7)))**7, 0.0)
  rng = jax.random.key(12)
  x_T = (hi * np.random.default_rng(1).standard_normal((5, 3))).astype(np.float32)
  settings = dict(s_churn=4.0, s_tmin=0.1, s_tmax=5.0, s_noise=1.003)  # churns 3 of 6 levels
  want = edm_numpy(x_T.astype(np.float64), sigmas, jax.random.split(rng)[1], **settings)
  sample = jax.jit(lambda x: edm_sample(toy_eps_fn, process, rng, x.shape, prediction="eps",
                                        steps=steps, clip_denoised=False, x_T=x, **settings))
  got = sample.lower(x_T).compile(
      compiler_options={"xla_backend_optimization_level": 3})(x_T)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  unchurned = edm_numpy(x_T.astype(np.float64), sigmas, jax.random.split(rng)[1],
                        s_churn=0.0, s_tmin=0.0, s_tmax=np.inf, s_noise=1.0)
  assert np.abs(want - unchurned).max() > 0.1


def test_ode_times_and_prior_start():
  vp = VP()
  np.testing.assert_allclose(ode_times(vp, 4), vp.eps + (1 - vp.eps) * np.linspace(1, 0, 5),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="shift"):
    ode_times(vp, 4, shift=0.0)
  with pytest.raises(ValueError, match="steps"):
    ode_times(vp, 0)
  with pytest.raises(ValueError, match="midpoint"):
    ode_sample(toy_velocity_fn, vp, jax.random.key(0), (2, 1), method="rk4")
  # Without x_T the start is prior_std times the first split key's normals (EDM: 80); with a
  # zero velocity it stays there, and so does its x0 estimate x - t * 0.
  rng = jax.random.key(9)
  got = ode_sample(lambda x, t: jnp.zeros_like(x), EDM(), rng, (3, 2), steps=1)
  np.testing.assert_allclose(got, 80.0 * jax.random.normal(jax.random.split(rng)[0], (3, 2)),
                             rtol=1e-6)


# -- Training-time distributions and losses. --


def test_sample_times_logit_normal_moments():
  n, loc, scale = 100_000, 0.4, 1.3
  t = np.asarray(sample_times(jax.random.key(0), n, distribution="logit_normal", loc=loc,
                              scale=scale), np.float64)
  assert t.shape == (n,) and np.all((t > 0) & (t < 1))
  logits = np.log(t / (1.0 - t))
  # Standard errors: mean scale / sqrt(n) = 0.004, std scale / sqrt(2 n) = 0.003; 5 of each.
  assert abs(logits.mean() - loc) < 5 * scale / np.sqrt(n)
  assert abs(logits.std() - scale) < 5 * scale / np.sqrt(2 * n)


@pytest.mark.parametrize("scale", [-1.0, 0.0, 1.29, 2.0 / (np.pi - 2.0)])
def test_sample_times_mode_and_uniform_formulas(scale):
  rng = jax.random.key(1)
  n = 1000
  u = np.asarray(jax.random.uniform(rng, (n,), jnp.float32), np.float64)
  want = 1.0 - u - scale * (np.cos(0.5 * np.pi * u)**2 - 1.0 + u)  # SD3 Eq. 20
  got = sample_times(rng, n, distribution="mode", scale=scale)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.all((np.asarray(got) >= -1e-6) & (np.asarray(got) <= 1 + 1e-6))
  uniform = np.asarray(sample_times(rng, n, distribution="uniform"))
  np.testing.assert_array_equal(uniform, u.astype(np.float32))
  assert np.all((uniform >= 0) & (uniform < 1))


def test_sample_times_rejects_bad_settings():
  with pytest.raises(ValueError, match="logit-normal scale"):
    sample_times(jax.random.key(0), 4, distribution="logit_normal", scale=0.0)
  with pytest.raises(ValueError, match="mode-sampling scale"):
    sample_times(jax.random.key(0), 4, distribution="mode", scale=1.76)
  with pytest.raises(ValueError, match="mode-sampling scale"):
    sample_times(jax.random.key(0), 4, distribution="mode", scale=-1.01)
  with pytest.raises(ValueError, match="logit_normal"):
    sample_times(jax.random.key(0), 4, distribution="beta")


def test_edm_preconditioning_and_loss_weight_table_1():
  sd = 0.5
  sigma = np.array([0.002, 0.05, 0.5, 1.0, 7.0, 80.0])
  c_skip, c_out, c_in, c_noise = edm_lib.preconditioning(jnp.asarray(sigma, jnp.float32), sd)
  np.testing.assert_allclose(c_skip, sd**2 / (sigma**2 + sd**2), rtol=1e-5)
  np.testing.assert_allclose(c_out, sigma * sd / np.sqrt(sigma**2 + sd**2), rtol=1e-5)
  np.testing.assert_allclose(c_in, 1.0 / np.sqrt(sigma**2 + sd**2), rtol=1e-5)
  np.testing.assert_allclose(c_noise, np.log(sigma) / 4.0, rtol=1e-5)
  lam = edm_lib.loss_weight(jnp.asarray(sigma, jnp.float32), sd)
  np.testing.assert_allclose(lam, (sigma**2 + sd**2) / (sigma * sd)**2, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(lam, np.float64) * np.asarray(c_out, np.float64)**2, 1.0,
                             rtol=1e-5)
  # The effective training target of F has unit variance at every sigma (EDM Eq. 8 / App. B.6):
  # Var[(x0 - c_skip (x0 + sigma n)) / c_out] = 1 for Var[x0] = sd^2.
  var = ((1 - sd**2 / (sigma**2 + sd**2))**2 * sd**2
         + (sd**2 / (sigma**2 + sd**2))**2 * sigma**2) / np.asarray(c_out, np.float64)**2
  np.testing.assert_allclose(var, 1.0, rtol=1e-5)


def toy_network(x, c_noise):
  """A fixed 'raw network' F(c_in x; c_noise)."""
  return jnp.tanh(x) * (1.0 + 0.1 * c_noise[:, None, None, None]) + 0.2


def test_edm_objective_loss_is_the_unweighted_raw_network_error():
  """lambda ||D - x0||^2 = ||F - (x0 - c_skip x) / c_out||^2: EDM's weight makes the effective
  weight of F's error 1 (Sec. 5); sigma and n from the documented key split."""
  sd, p_mean, p_std = 0.5, -1.2, 1.2
  objective = edm_lib.EDMObjective(sigma_data=sd, p_mean=p_mean, p_std=p_std)
  process = EDM()
  x0 = np.random.default_rng(0).uniform(-1, 1, (16, 4, 4, 2)).astype(np.float32)
  rng = jax.random.key(3)
  model_fn = objective.network_fn(toy_network, process, "x0")
  loss, metrics = jax.jit(lambda x, r: objective.loss(model_fn, process, x, r, prediction="x0",
                                                      loss_type="mse"))(jnp.asarray(x0), rng)
  t_rng, noise_rng = jax.random.split(rng)
  sigma = np.exp(p_mean + p_std * np.asarray(jax.random.normal(t_rng, (16,)), np.float64))
  noise = np.asarray(jax.random.normal(noise_rng, x0.shape), np.float64)
  b = (slice(None), None, None, None)
  x = x0 + sigma[b] * noise
  total = sigma**2 + sd**2
  c_skip, c_out, c_in = sd**2 / total, sigma * sd / np.sqrt(total), 1 / np.sqrt(total)
  f = np.tanh(c_in[b] * x) * (1.0 + 0.1 * np.log(sigma) / 4)[b] + 0.2
  d = c_skip[b] * x + c_out[b] * f
  per_example = ((d - x0)**2).reshape(16, -1).mean(1)
  lam = total / (sigma * sd)**2
  want = np.mean(lam * per_example)
  np.testing.assert_allclose(loss, want, rtol=1e-4)
  raw = ((f - (x0 - c_skip[b] * x) / c_out[b])**2).reshape(16, -1).mean(1)
  np.testing.assert_allclose(want, raw.mean(), rtol=1e-9)
  np.testing.assert_allclose(metrics["unweighted"], per_example.mean(), rtol=1e-4)
  with pytest.raises(ValueError, match="EDM process"):
    objective.check(VP(), "x0")
  with pytest.raises(ValueError, match="prediction='x0'"):
    objective.check(process, "eps")


def test_continuous_loss_linear_velocity_matches_numpy():
  """Flow matching: E_t ||u(x_t, t) - (eps - x0)||^2 on the linear path, t from the
  objective's logit-normal (documented split: t_rng, noise_rng)."""
  objective = FlowMatchingObjective(distribution="logit_normal", loc=0.2, scale=0.8)
  process = Linear()
  x0 = np.random.default_rng(1).uniform(-1, 1, (8, 3, 3, 1)).astype(np.float32)
  fn = lambda x, t: jnp.sin(x) * t[:, None, None, None]  # noqa: E731
  rng = jax.random.key(11)
  for loss_type in ("mse", "l1"):
    loss, metrics = jax.jit(lambda x, r, lt=loss_type: continuous_loss(
        fn, process, x, r, sample_times=functools.partial(objective.times, process),
        prediction="velocity", loss_type=lt))(jnp.asarray(x0), rng)
    t_rng, noise_rng = jax.random.split(rng)
    t = 1 / (1 + np.exp(-(0.2 + 0.8 * np.asarray(jax.random.normal(t_rng, (8,)), np.float64))))
    eps = np.asarray(jax.random.normal(noise_rng, x0.shape), np.float64)
    b = (slice(None), None, None, None)
    xt = (1 - t[b]) * x0 + t[b] * eps
    diff = np.sin(xt) * t[b] - (eps - x0)
    err = diff**2 if loss_type == "mse" else np.abs(diff)
    np.testing.assert_allclose(loss, err.reshape(8, -1).mean(1).mean(), rtol=1e-4)
    np.testing.assert_allclose(metrics["unweighted"], loss, rtol=1e-6)
  # The couples' own noise (reflow) replaces the drawn one.
  z = np.random.default_rng(2).standard_normal(x0.shape).astype(np.float32)
  loss, _ = continuous_loss(lambda x, t: jnp.asarray(z - x0), process, jnp.asarray(x0), rng,
                            sample_times=functools.partial(objective.times, process),
                            prediction="velocity", noise=jnp.asarray(z))
  assert float(loss) == 0.0
  with pytest.raises(ValueError, match="loss_type"):
    continuous_loss(fn, process, jnp.asarray(x0), rng, sample_times=objective.times,
                    prediction="velocity", loss_type="huber")


def test_continuous_loss_edm_x0_with_weight_matches_numpy():
  process = EDM()
  x0 = np.random.default_rng(3).uniform(-1, 1, (8, 2, 2, 3)).astype(np.float32)
  fn = lambda x, t: 0.5 * x / (1.0 + t[:, None, None, None])  # noqa: E731
  rng = jax.random.key(5)
  times = functools.partial(edm_lib.sample_sigmas, p_mean=-1.2, p_std=1.2)
  weight = functools.partial(edm_lib.loss_weight, sigma_data=0.5)
  loss, metrics = jax.jit(lambda x, r: continuous_loss(
      fn, process, x, r, sample_times=times, prediction="x0", weight_fn=weight))(
          jnp.asarray(x0), rng)
  t_rng, noise_rng = jax.random.split(rng)
  sigma = np.exp(-1.2 + 1.2 * np.asarray(jax.random.normal(t_rng, (8,)), np.float64))
  eps = np.asarray(jax.random.normal(noise_rng, x0.shape), np.float64)
  b = (slice(None), None, None, None)
  x = x0 + sigma[b] * eps
  per_example = ((0.5 * x / (1 + sigma[b]) - x0)**2).reshape(8, -1).mean(1)
  w = (sigma**2 + 0.25) / (0.5 * sigma)**2
  np.testing.assert_allclose(loss, np.mean(w * per_example), rtol=1e-4)
  np.testing.assert_allclose(metrics["unweighted"], per_example.mean(), rtol=1e-4)


# -- The sampler table. --


def test_discrete_samplers_refuse_continuous_processes():
  fn = gmm_x0_fn(PROCESSES["linear"])
  for process in (Linear(), EDM(), VP()):
    for name in DISCRETE:
      with pytest.raises(ValueError, match="ode_euler") as err:
        check_sampler(name, process)
      assert "'heun'" in str(err.value) and "'ddim'" not in str(err.value).split(":")[-1]
  with pytest.raises(ValueError, match="ode_euler"):
    run_sampler("ddim", fn, Linear(), jax.random.key(0), (4, 1), prediction="x0")
  with pytest.raises(ValueError, match="ode_euler"):
    run_sampler("heun", fn, Linear(), jax.random.key(0), (4, 1), prediction="x0")
  with pytest.raises(ValueError, match="unknown sampler 'dpm'.*ode_midpoint"):
    check_sampler("dpm")


def test_every_continuous_sampler_name_runs_on_edm():
  """The names the tests above drove on EDM are all of the table but the discrete three."""
  driven = {name for _, name, _, _ in ODE_CASES} | {"heun", "edm", "euler", "sde_euler"}
  assert driven == set(SAMPLERS) - set(DISCRETE)
  for name in driven:
    check_sampler(name, EDM())
  for name in SAMPLERS:
    check_sampler(name, get_schedule("linear", 10))
