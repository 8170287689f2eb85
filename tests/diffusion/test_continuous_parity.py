"""Parity of the continuous-time samplers with diffusers: `ode_sample` (flow-matching Euler on the
`Linear` path) with `FlowMatchEulerDiscreteScheduler`, and `edm_sample(second_order=False)`
(EDM's Algorithm 2 with first-order steps) with `EDMEulerScheduler`, with and without churn.

The references were written by `benchmarks/continuous_reference.py` (diffusers 0.42.1, torch
2.13 CPU; the fixture records the versions) from the exact velocity / denoiser of a two-Gaussian
mixture; here the same functions, written again in jax independently of the script, drive jgen
from the same x_T. The fixture tests need neither torch nor diffusers; `test_live_diffusers`
also runs the script's reference loops against the installed diffusers when it is importable.

What is matched, and where the conventions differ (details in the script's docstring):

* Flow matching. jgen's grid `ode_times(Linear(), steps, shift)` is u = linspace(1, 0, steps + 1)
  warped by shift u / (1 + (shift - 1) u). diffusers applies the same warp to sigmas passed to
  `set_timesteps(sigmas=...)` and appends the final 0, so the reference passes the *unshifted*
  u[:-1] and its sigmas equal jgen's grid. diffusers' *default* grid (`set_timesteps(steps)`)
  differs: `steps` sigmas linear from 1 to shift(1/1000) (the shifted smallest training sigma),
  shifted a second time, then 0 (`test_diffusers_default_flow_grid`); jgen has no such grid.
* EDM. Same Karras grid (sigma_min 0.002, sigma_max 80, rho 7, final 0) and the same churn rule
  gamma_i = min(s_churn / steps, sqrt(2) - 1) on s_tmin <= sigma_i <= s_tmax, with jgen's churn
  noise (`fold_in(step_rng, i)`) injected into diffusers' scheduler. Without churn the scheduler
  runs as pipelines run it. With churn diffusers' `step` is not Algorithm 2: the model has
  already been called on the un-churned (x_i, sigma_i) when `step` adds the noise, and it then
  combines that output with x_hat at sigma_hat. jgen (like k-diffusion's `sample_euler`) follows
  Algorithm 2, D evaluated at (x_hat, sigma_hat); the reference gets that by passing
  `pred_original_sample=D(x_hat; sigma_hat)` to diffusers' `step` (which still does the churn
  and the Euler update itself). The pipeline-style result is kept in the fixture as
  `edm_churn_native_*`; it is 0.36-0.42 away.
"""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.diffusion as jd
from jgen.ops import processes

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "continuous_reference.npz"
SCRIPT = pathlib.Path(__file__).parents[2] / "benchmarks" / "continuous_reference.py"
FM_CASES = [(shift, steps) for shift in (1.0, 3.0) for steps in (1, 4, 10)]
EDM_STEPS = (1, 4, 10, 18)
CHURN_STEPS = (10, 18)
# jgen runs in float32; diffusers keeps float32 sigmas and (flow matching) a float32 state, while
# the reference's velocity / denoiser are float64. Measured max |diff| (diffusers 0.42.1, final
# samples of scale ~1): flow matching <= 2.2e-7 (~1e-7 relative); EDM Euler <= 1.6e-6 for 4-18
# steps, <= 9e-7 with churn. EDM's one-step case differs by 1.6e-5: its single step is
# x + (0 - 80) (x - D) / 80 = D, computed from |x| up to 248.5 (80 |x_T|), where one float32 ulp
# is 1.5e-5, and this cancellation is float32's (diffusers forms that step in float64 here
# because the model output is float64). Tolerances: FM_TOL ~10x the measured error; EDM_TOL 3
# ulps at 248.5 (2e-7 relative to the starting state). Getting a convention wrong is far
# larger: shift 3.05 for 3 moves the flow samples by 4.8e-3, rho 7.05 for 7 the EDM samples by
# 6.7e-4, s_noise 1 for 1.003 the churned ones by 3.7e-3.
FM_TOL = 2e-6
EDM_TOL = 5e-5


@pytest.fixture(scope="module")
def ref():
  with np.load(FIXTURE) as f:
    return {k: f[k] for k in f.files}


def _mixture(ref):
  return [(float(ref["mixture_w"]), float(ref["mixture_m1"]), float(ref["mixture_s1"])),
          (1.0 - float(ref["mixture_w"]), float(ref["mixture_m2"]), float(ref["mixture_s2"]))]


def _responsibilities(comps, x, means, variances):
  logp = jnp.stack([jnp.log(w) - 0.5 * jnp.log(2 * jnp.pi * v) - 0.5 * (x - mu)**2 / v
                    for (w, _, _), mu, v in zip(comps, means, variances)])
  return jax.nn.softmax(logp, axis=0)


def _velocity_fn(ref):
  """u(x, t) = E[eps - x0 | (1 - t) x0 + t eps = x] of the mixture; t [B]."""
  comps = _mixture(ref)

  def velocity(x, t):
    t = t[:, None]
    means = [(1 - t) * m for _, m, _ in comps]
    var = [(1 - t)**2 * s**2 + t**2 for _, _, s in comps]
    r = _responsibilities(comps, x, means, var)
    return sum(r[k] * (t * (x - mu) / v - m - (1 - t) * s**2 * (x - mu) / v)
               for k, ((_, m, s), mu, v) in enumerate(zip(comps, means, var)))

  return velocity


def _denoiser_fn(ref):
  """D(x; sigma) = E[x0 | x0 + sigma eps = x] of the mixture; sigma [B] (EDM: t = sigma)."""
  comps = _mixture(ref)

  def denoiser(x, sigma):
    sigma = sigma[:, None]
    var = [s**2 + sigma**2 for _, _, s in comps]
    r = _responsibilities(comps, x, [m for _, m, _ in comps], var)
    return sum(r[k] * (m + s**2 * (x - m) / v) for k, ((_, m, s), v) in enumerate(zip(comps, var)))

  return denoiser


def _edm_process(ref):
  return processes.EDM(sigma_min=float(ref["edm_sigma_min"]),
                       sigma_max=float(ref["edm_sigma_max"]))


def _churn(ref):
  return {k: float(ref[f"edm_{k}"]) for k in ("s_churn", "s_tmin", "s_tmax", "s_noise")}


def _flow_match(ref, shift, steps):
  x_T = jnp.asarray(ref["fm_x_T"], jnp.float32)
  return np.asarray(jax.jit(lambda x: jd.ode_sample(
      _velocity_fn(ref), processes.Linear(), jax.random.key(0), x.shape, prediction="velocity",
      steps=steps, method="euler", shift=shift, x_T=x))(x_T), np.float64)


def _edm_euler(ref, steps, churn):
  x_T = jnp.asarray(ref["edm_x_T"], jnp.float32)
  kwargs = _churn(ref) if churn else {}
  return np.asarray(jax.jit(lambda x: jd.edm_sample(
      _denoiser_fn(ref), _edm_process(ref), jax.random.key(int(ref["edm_seed"])), x.shape,
      prediction="x0", steps=steps, rho=float(ref["edm_rho"]), second_order=False,
      clip_denoised=False, x_T=x, **kwargs))(x_T), np.float64)


@pytest.mark.parametrize("shift,steps", FM_CASES)
def test_ode_times_are_diffusers_flow_sigmas(ref, shift, steps):
  ours = np.asarray(jd.ode_times(processes.Linear(), steps, shift=shift))
  np.testing.assert_allclose(ours, ref[f"fm_sigmas_{shift:g}_{steps}"], rtol=0, atol=1e-7)


@pytest.mark.parametrize("shift,steps", FM_CASES)
def test_flow_match_euler_matches_diffusers(ref, shift, steps):
  out = _flow_match(ref, shift, steps)
  np.testing.assert_allclose(out, ref[f"fm_{shift:g}_{steps}"], rtol=0, atol=FM_TOL)


def test_diffusers_default_flow_grid(ref):
  """diffusers' default grid is not `ode_times` (so the reference passes sigmas explicitly):
  linspace(1, shift(1/1000), steps) shifted again, then 0. One step is [1, 0] in both."""

  def warp(u, shift):
    return shift * u / (1 + (shift - 1) * u)

  for shift, steps in FM_CASES:
    default = ref[f"fm_default_sigmas_{shift:g}_{steps}"]
    expected = np.append(warp(np.linspace(1.0, warp(1e-3, shift), steps), shift), 0.0)
    np.testing.assert_allclose(default, expected, rtol=1e-6, atol=1e-7)
    ours = np.asarray(jd.ode_times(processes.Linear(), steps, shift=shift))
    assert (steps == 1) == np.allclose(default, ours), (shift, steps)


@pytest.mark.parametrize("steps", EDM_STEPS)
def test_karras_sigmas_are_diffusers_edm_sigmas(ref, steps):
  ours = np.asarray(jd.schedule_sigmas(_edm_process(ref), steps, rho=float(ref["edm_rho"])))
  np.testing.assert_allclose(ours, ref[f"edm_sigmas_{steps}"], rtol=2e-6, atol=0)


@pytest.mark.parametrize("steps", EDM_STEPS)
def test_edm_euler_matches_diffusers(ref, steps):
  out = _edm_euler(ref, steps, churn=False)
  np.testing.assert_allclose(out, ref[f"edm_{steps}"], rtol=0, atol=EDM_TOL)


@pytest.mark.parametrize("steps", CHURN_STEPS)
def test_edm_euler_churn_matches_algorithm_2(ref, steps):
  # The noise diffusers was given is edm_sample's: z_i from fold_in(step_rng, i).
  _, step_rng = jax.random.split(jax.random.key(int(ref["edm_seed"])))
  shape = ref["edm_x_T"].shape
  z = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(step_rng, i), shape))
                for i in range(steps)])
  # (to an ulp: XLA's compile options, e.g. the test suite's, may round the normal's inverse
  # erf differently)
  np.testing.assert_allclose(z, ref[f"edm_z_{steps}"], rtol=0, atol=1e-6,
                             err_msg="jax's PRNG stream changed: rerun the benchmark")
  out = _edm_euler(ref, steps, churn=True)
  np.testing.assert_allclose(out, ref[f"edm_churn_alg2_{steps}"], rtol=0, atol=EDM_TOL)
  # diffusers' pipeline-style churn (model called before the noise is added) is another sampler.
  assert np.abs(out - ref[f"edm_churn_native_{steps}"]).max() > 1e-2


def test_live_diffusers(ref):
  """The script's reference loops on the installed diffusers, against jgen directly."""
  pytest.importorskip("torch")
  pytest.importorskip("diffusers")
  spec = importlib.util.spec_from_file_location("continuous_reference", SCRIPT)
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  for shift, steps in ((1.0, 10), (3.0, 4)):
    expected, _ = script.run_flow_match(ref["fm_x_T"], steps, shift)
    np.testing.assert_allclose(_flow_match(ref, shift, steps), expected, rtol=0, atol=FM_TOL)
  expected, _ = script.run_edm_euler(ref["edm_x_T"], 10, mode="native")
  np.testing.assert_allclose(_edm_euler(ref, 10, churn=False), expected, rtol=0, atol=EDM_TOL)
  steps = 10
  expected, _ = script.run_edm_euler(ref["edm_x_T"], steps, mode="alg2",
                                     z=script.churn_noise(steps), **_churn(ref))
  np.testing.assert_allclose(_edm_euler(ref, steps, churn=True), expected, rtol=0, atol=EDM_TOL)
