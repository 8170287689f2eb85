"""Tests for jgen.diffusion.samplers.

Random draws inside a scan are slow to compile on CPU, so the stochastic
samplers are wrapped once in module-level jitted functions whose model (a
noise 'oracle' for a known x0 plus an optional perturbation of weight w) is
fully parameterised by traced arguments, and reused across tests.
"""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.diffusion import (
    ddim_interpolate,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    get_schedule,
    predict_eps_from_x0,
    q_sample,
    slerp,
)

T = 20
SHAPE = (2, 4, 4, 1)
TRACES = collections.Counter()
jit_slerp = jax.jit(slerp)


def toy_eps_fn(schedule, x0_target, w):
  """The exact noise for data x0_target, plus w * (a t-dependent nonlinearity)."""

  def eps_fn(x, t):
    assert t.dtype == jnp.int32 and t.shape == (x.shape[0],)
    scale = 1.0 + t[:, None, None, None].astype(jnp.float32) / T
    target = jnp.broadcast_to(x0_target, x.shape)
    return predict_eps_from_x0(schedule, x, t, target) + w * jnp.tanh(x) * scale

  return eps_fn


@jax.jit
def ddpm_jit(schedule, rng, x_T, x0_target, w):
  TRACES["ddpm"] += 1
  eps_fn = toy_eps_fn(schedule, x0_target, w)
  return ddpm_sample(eps_fn, schedule, rng, x_T.shape, x_T=x_T)


@functools.partial(jax.jit, static_argnames=("steps",))
def ddim_jit(schedule, rng, x_T, x0_target, w, eta, *, steps):
  eps_fn = toy_eps_fn(schedule, x0_target, w)
  return ddim_sample(eps_fn, schedule, rng, x_T.shape, steps=steps, eta=eta, x_T=x_T)


@pytest.fixture(scope="module")
def schedule():
  return get_schedule("cosine", T)


@pytest.fixture(scope="module")
def x0():
  return jnp.asarray(np.random.default_rng(0).uniform(-0.9, 0.9, SHAPE), jnp.float32)


@pytest.fixture(scope="module")
def x_T():
  return jnp.asarray(np.random.default_rng(1).normal(size=SHAPE), jnp.float32)


def keys(*seeds):
  return [jax.random.PRNGKey(s) for s in seeds]


def test_ddpm_oracle_recovers_x0_and_keys_matter(schedule, x0, x_T):
  k0, k1 = keys(0, 1)
  np.testing.assert_allclose(ddpm_jit(schedule, k0, x_T, x0, 0.0), x0, atol=1e-5)
  a, b, c = (ddpm_jit(schedule, k, x_T, x0, 0.5) for k in (k0, k0, k1))
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a - c)).max() > 1e-3
  assert np.all(np.abs(np.asarray(a)) <= 1.0 + 1e-5)


def test_ddpm_single_compile_and_matches_eager(schedule, x0, x_T):
  before = TRACES["ddpm"]
  args = zip(keys(3, 4, 5), (1.0, -1.0, 0.5), (0.1, 0.2, 0.3))
  outs = [ddpm_jit(schedule, k, x_T, x0 * s, w) for k, s, w in args]
  assert TRACES["ddpm"] - before <= 1
  eager = ddpm_sample(toy_eps_fn(schedule, x0, 0.1), schedule, keys(3)[0], SHAPE, x_T=x_T)
  np.testing.assert_allclose(outs[0], eager, atol=1e-5)


def test_ddpm_matches_numpy_reference(schedule, x0, x_T):
  """Posterior-mean + fixed-small-variance steps, coefficients in float64 from betas."""
  rng = jax.random.PRNGKey(7)
  w = 0.3
  eps_fn = jax.jit(toy_eps_fn(schedule, x0, w))
  step_noise = jax.jit(lambda key, i: jax.random.normal(jax.random.fold_in(key, i), SHAPE))
  betas = np.asarray(schedule.betas, np.float64)
  abar = np.cumprod(1 - betas)
  abar_prev = np.r_[1.0, abar[:-1]]
  _, step_rng = jax.random.split(rng)
  x = np.asarray(x_T, np.float64)
  for i, t in enumerate(range(T - 1, -1, -1)):
    t_vec = jnp.full((SHAPE[0],), t, jnp.int32)
    eps = np.asarray(eps_fn(jnp.asarray(x, jnp.float32), t_vec), np.float64)
    x0_pred = np.clip((x - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t]), -1, 1)
    mean = (np.sqrt(abar_prev[t]) * betas[t] * x0_pred + np.sqrt(1 - betas[t]) *
            (1 - abar_prev[t]) * x) / (1 - abar[t])
    if t > 0:
      var = betas[t] * (1 - abar_prev[t]) / (1 - abar[t])
      z = np.asarray(step_noise(step_rng, i))
      x = mean + np.sqrt(var) * z
    else:
      x = mean
  np.testing.assert_allclose(ddpm_jit(schedule, rng, x_T, x0, w), x, atol=1e-4)


def test_ddpm_oracle_trajectory_has_forward_marginals(schedule):
  """With the exact eps model every state x_t ~ N(sqrt(abar_t) x0, 1 - abar_t)."""
  shape = (256, 4, 4, 1)
  gen = np.random.default_rng(2)
  x0 = jnp.asarray(gen.uniform(-0.9, 0.9, shape), jnp.float32)
  t_last = jnp.full((shape[0],), T - 1, jnp.int32)
  x_T = q_sample(schedule, x0, t_last, jnp.asarray(gen.normal(size=shape), jnp.float32))
  oracle = toy_eps_fn(schedule, x0, 0.0)
  sample, traj = jax.jit(
      lambda s, k: ddpm_sample(oracle, s, k, shape, x_T=x_T, return_trajectory=True))(
          schedule, jax.random.PRNGKey(0))
  assert traj.shape == (T + 1,) + shape
  np.testing.assert_allclose(traj[0], x_T)
  np.testing.assert_allclose(traj[T], sample)
  np.testing.assert_allclose(sample, x0, atol=1e-5)
  abar = np.asarray(schedule.alphas_cumprod)
  for k in range(1, T):
    a = abar[T - 1 - k]
    z = (np.asarray(traj[k]) - np.sqrt(a) * np.asarray(x0)) / np.sqrt(1 - a)
    assert abs(z.mean()) < 0.06, k
    assert abs(z.std() - 1) < 0.05, k


@pytest.mark.parametrize(
    "num_timesteps,steps",
    [
        (1000, 50),
        (1000, 1000),
        (1000, 999),
        (1000, 300),
        (1000, 500),
        (10, 3),
        (10, 2),
        (7, 1),
        (1, 1),
    ],
)
@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_ddim_timesteps_properties(num_timesteps, steps, spacing):
  taus = ddim_timesteps(num_timesteps, steps, spacing)
  assert np.issubdtype(taus.dtype, np.integer) and taus.shape == (steps,)
  assert np.all(np.diff(taus) > 0)
  assert taus[-1] == num_timesteps - 1 and taus.min() >= 0
  if steps > 1:
    assert taus[0] == 0


def test_ddim_timesteps_strides():
  np.testing.assert_array_equal(ddim_timesteps(1000, 10), np.arange(10) * 111)
  np.testing.assert_array_equal(ddim_timesteps(100, 100, "quadratic"), np.arange(100))
  quad = ddim_timesteps(1000, 10, "quadratic")
  np.testing.assert_array_equal(quad, (np.arange(10)**2 * 999) // 81)
  gaps = np.diff(ddim_timesteps(1000, 50, "quadratic"))
  assert np.all(np.diff(gaps) >= -1) and gaps[-1] > 5 * gaps[0]


def test_ddim_trailing_timesteps_are_diffusers_trailing_spacing():
  # DDIMScheduler(timestep_spacing="trailing").set_timesteps(n) on T = 1000, reversed.
  assert ddim_timesteps(1000, 1, "trailing").tolist() == [999]
  assert ddim_timesteps(1000, 2, "trailing").tolist() == [499, 999]
  assert ddim_timesteps(1000, 4, "trailing").tolist() == [249, 499, 749, 999]
  assert ddim_timesteps(1000, 3, "trailing").tolist() == [332, 666, 999]
  np.testing.assert_array_equal(ddim_timesteps(10, 10, "trailing"), np.arange(10))


@pytest.mark.parametrize("args", [(10, 0), (10, 11), (10, 5, "log")])
def test_ddim_timesteps_errors(args):
  with pytest.raises(ValueError):
    ddim_timesteps(*args)


@pytest.mark.parametrize("steps,spacing", [(T, "uniform"), (5, "uniform"), (6, "quadratic"),
                                           (1, "uniform")])
def test_ddim_oracle_recovers_x0(schedule, x0, x_T, steps, spacing):
  oracle = toy_eps_fn(schedule, x0, 0.0)
  out = ddim_sample(oracle,
                    schedule,
                    jax.random.PRNGKey(0),
                    SHAPE,
                    steps=steps,
                    spacing=spacing,
                    x_T=x_T)
  np.testing.assert_allclose(out, x0, atol=2e-4)


def test_ddim_oracle_with_noise_recovers_x0(schedule, x0, x_T):
  out = ddim_jit(schedule, jax.random.PRNGKey(0), x_T, x0, 0.0, 1.0, steps=T)
  np.testing.assert_allclose(out, x0, atol=1e-5)


def test_ddim_eta0_ignores_rng_given_x_T_and_eta_positive_does_not(schedule, x0, x_T):
  eps_fn = toy_eps_fn(schedule, x0, 0.3)
  k0, k1 = keys(0, 1)
  a, b = (ddim_sample(eps_fn, schedule, k, SHAPE, steps=5, x_T=x_T) for k in (k0, k1))
  np.testing.assert_array_equal(a, b)
  c, d, e = (ddim_jit(schedule, k, x_T, x0, 0.3, 0.5, steps=T) for k in (k0, k0, k1))
  np.testing.assert_array_equal(c, d)
  assert np.abs(np.asarray(c - e)).max() > 1e-3


def test_ddim_draws_x_T_from_rng(schedule):
  eps_fn = lambda x, t: 0.3 * jnp.tanh(x)
  a, b, c = (ddim_sample(eps_fn, schedule, k, SHAPE, steps=4) for k in keys(0, 0, 1))
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a - c)).max() > 1e-3


def test_ddim_eta1_full_steps_equals_ddpm(schedule, x0, x_T):
  """Song et al. 2021: eta = 1 with all T steps is the DDPM ancestral sampler."""
  rng = jax.random.PRNGKey(11)
  ddim = ddim_jit(schedule, rng, x_T, x0, 0.3, 1.0, steps=T)
  ddpm = ddpm_jit(schedule, rng, x_T, x0, 0.3)
  np.testing.assert_allclose(ddim, ddpm, atol=1e-4)


@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_ddim_eta0_matches_numpy_reference(schedule, x0, x_T, spacing):
  eps_fn = jax.jit(toy_eps_fn(schedule, x0, 0.3))
  abar = np.cumprod(1 - np.asarray(schedule.betas, np.float64))
  taus = ddim_timesteps(T, 6, spacing)
  x = np.asarray(x_T, np.float64)
  for t, t_prev in zip(taus[::-1], list(taus[::-1][1:]) + [None]):
    a_prev = 1.0 if t_prev is None else abar[t_prev]
    t_vec = jnp.full((SHAPE[0],), t, jnp.int32)
    eps = np.asarray(eps_fn(jnp.asarray(x, jnp.float32), t_vec), np.float64)
    x0_pred = (x - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t])
    x = np.sqrt(a_prev) * x0_pred + np.sqrt(1 - a_prev) * eps
  out = ddim_sample(
      eps_fn,
      schedule,
      jax.random.PRNGKey(0),
      SHAPE,
      steps=6,
      spacing=spacing,
      clip_denoised=False,
      x_T=x_T,
  )
  np.testing.assert_allclose(out, x, rtol=1e-4, atol=1e-4)


def test_ddim_single_compile_and_matches_eager(schedule, x0):
  traces = []
  eps_fn = toy_eps_fn(schedule, x0, 0.3)

  @jax.jit
  def sample(sched, rng):
    traces.append(1)
    return ddim_sample(eps_fn, sched, rng, SHAPE, steps=5)

  jitted = [sample(schedule, k) for k in keys(0, 1)]
  jitted.append(sample(get_schedule("linear", T), keys(0)[0]))
  assert len(traces) == 1
  eager = ddim_sample(eps_fn, schedule, keys(1)[0], SHAPE, steps=5)
  np.testing.assert_allclose(jitted[1], eager, atol=1e-5)


def test_slerp_endpoints_norm_and_midpoint():
  gen = np.random.default_rng(0)
  z0 = jnp.asarray(gen.normal(size=(3, 4, 4, 2)), jnp.float32)
  z1 = jnp.asarray(gen.normal(size=(3, 4, 4, 2)), jnp.float32)
  np.testing.assert_allclose(jit_slerp(z0, z1, 0.0), z0, atol=1e-5)
  np.testing.assert_allclose(jit_slerp(z0, z1, 1.0), z1, atol=1e-5)
  flat = lambda z: np.asarray(z).reshape(z.shape[0], -1)
  unit0 = z0 / np.linalg.norm(flat(z0), axis=1)[:, None, None, None]
  unit1 = z1 / np.linalg.norm(flat(z1), axis=1)[:, None, None, None]
  for alpha in (0.25, 0.5, jnp.array([0.1, 0.6, 0.9])):
    norms = np.linalg.norm(flat(jit_slerp(unit0, unit1, alpha)), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
  e0 = jnp.zeros((1, 2, 1, 1)).at[0, 0].set(1.0)
  e1 = jnp.zeros((1, 2, 1, 1)).at[0, 1].set(1.0)
  np.testing.assert_allclose(jit_slerp(e0, e1, 0.5), (e0 + e1) / np.sqrt(2), atol=1e-6)
  quarter = jit_slerp(e0, e1, 1 / 3)
  np.testing.assert_allclose(quarter.ravel(), [np.cos(np.pi / 6), np.sin(np.pi / 6)], atol=1e-6)


def test_slerp_near_parallel_is_finite():
  z = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8)), jnp.float32)
  for z1 in (z, z * 3.0, z + 1e-7):
    out = jit_slerp(z, z1, 0.3)
    assert np.all(np.isfinite(np.asarray(out)))
    np.testing.assert_allclose(out, 0.7 * z + 0.3 * z1, rtol=1e-4, atol=1e-5)
  grad = jax.grad(lambda a: jit_slerp(z, z, a).sum())(0.3)
  assert np.isfinite(grad)


def test_ddim_interpolate_decodes_slerp_path(schedule):
  eps_fn = lambda x, t: 0.3 * jnp.tanh(x)
  shape, num, rng = (4, 4, 1), 5, jax.random.PRNGKey(9)
  sample = lambda s, k: ddim_interpolate(eps_fn, s, k, shape=shape, num=num, steps=4)
  out = jax.jit(sample)(schedule, rng)
  assert out.shape == (num,) + shape
  for idx, key in ((0, 0), (num - 1, 1)):
    z = jax.random.normal(jax.random.split(rng, 3)[key], shape)[None]
    end = ddim_sample(eps_fn, schedule, rng, (1,) + shape, steps=4, x_T=z)
    np.testing.assert_allclose(out[idx:idx + 1], end, atol=1e-5)
  assert np.abs(np.asarray(out[1:] - out[:-1])).max() > 1e-3
