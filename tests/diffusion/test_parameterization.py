"""Tests for jgen.diffusion.parameterization against float64 NumPy closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.diffusion import ddim_sample, get_schedule, predict_x0_from_eps
from jgen.diffusion.parameterization import (
    PREDICTIONS,
    alpha_sigma,
    convert_prediction,
    eps_mse_weight,
    predict_eps,
    predict_x0,
    sigma_to_timestep,
    snr,
    timestep_to_sigma,
    to_eps_fn,
    to_x0_fn,
    training_target,
    v_target,
)

T = 1000
B = 6
SHAPE = (B, 3, 2, 2)


@pytest.fixture(scope="module")
def schedule():
  return get_schedule("linear", T)


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  x0 = rng.uniform(-1.0, 1.0, SHAPE)
  eps = rng.standard_normal(SHAPE)
  t = np.array([0, 1, 17, 500, 998, 999])
  return x0, eps, t


def np_alpha_sigma(t):
  abar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, T))[t]
  return np.sqrt(abar)[:, None, None, None], np.sqrt(1.0 - abar)[:, None, None, None]


def test_v_target_matches_numpy(schedule, data):
  x0, eps, t = data
  a, s = np_alpha_sigma(t)
  got = v_target(schedule, jnp.asarray(x0, jnp.float32), jnp.asarray(t),
                 jnp.asarray(eps, jnp.float32))
  np.testing.assert_allclose(got, a * eps - s * x0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("source", PREDICTIONS)
@pytest.mark.parametrize("target", PREDICTIONS)
def test_convert_matches_closed_form(schedule, data, source, target):
  x0, eps, t = data
  a, s = np_alpha_sigma(t)
  x_t = a * x0 + s * eps
  truth = {"eps": eps, "x0": x0, "v": a * eps - s * x0}
  got = convert_prediction(schedule, jnp.asarray(x_t, jnp.float32), jnp.asarray(t, jnp.int32),
                           jnp.asarray(truth[source], jnp.float32), source=source, target=target)
  # x0 from eps divides by alpha_{T-1} = 6e-3: float32 error of x_t is amplified.
  atol = 2e-3 if (target == "x0" and source == "eps") else 2e-4
  np.testing.assert_allclose(got, truth[target], atol=atol)


def test_round_trip_eps_x0_v_eps(schedule, data):
  x0, eps, t = data
  a, s = np_alpha_sigma(t)
  x_t = jnp.asarray(a * x0 + s * eps, jnp.float32)
  t = jnp.asarray(t, jnp.int32)
  e = jnp.asarray(eps, jnp.float32)
  to_x0 = convert_prediction(schedule, x_t, t, e, source="eps", target="x0")
  to_v = convert_prediction(schedule, x_t, t, to_x0, source="x0", target="v")
  back = convert_prediction(schedule, x_t, t, to_v, source="v", target="eps")
  np.testing.assert_allclose(back, e, atol=2e-4)
  np.testing.assert_allclose(predict_x0(schedule, x_t, t, to_v, prediction="v"), to_x0, atol=2e-3)
  np.testing.assert_allclose(predict_eps(schedule, x_t, t, to_x0, prediction="x0"), e, atol=2e-4)
  # eps -> x0 agrees with the schedule's own inversion used by DDIM.
  np.testing.assert_allclose(to_x0, predict_x0_from_eps(schedule, x_t, t, e), atol=1e-4)


def test_training_target(schedule, data):
  x0, eps, t = data
  x0, eps, t = jnp.asarray(x0, jnp.float32), jnp.asarray(eps, jnp.float32), jnp.asarray(t)
  np.testing.assert_array_equal(training_target(schedule, x0, t, eps, prediction="eps"), eps)
  np.testing.assert_array_equal(training_target(schedule, x0, t, eps, prediction="x0"), x0)
  np.testing.assert_array_equal(training_target(schedule, x0, t, eps, prediction="v"),
                                v_target(schedule, x0, t, eps))


def test_loss_weight_relations(schedule, data):
  """x0-MSE = eps-MSE / SNR, v-MSE = (1 + SNR) x0-MSE = (1 + 1 / SNR) eps-MSE at fixed x_t."""
  x0, eps, t = data
  a, s = np_alpha_sigma(t)
  x_t = a * x0 + s * eps
  eps_hat = eps + 0.3 * np.random.default_rng(1).standard_normal(SHAPE)
  x0_hat = (x_t - s * eps_hat) / a
  v_hat = a * eps_hat - s * x0_hat
  mse = lambda u, w: np.mean((u - w).reshape(B, -1)**2, axis=1)
  e_mse, x_mse, v_mse = mse(eps, eps_hat), mse(x0, x0_hat), mse(a * eps - s * x0, v_hat)
  snr_np = (a / s).ravel()**2
  tj = jnp.asarray(t)
  np.testing.assert_allclose(snr(schedule, tj), snr_np, rtol=1e-4)
  np.testing.assert_allclose(x_mse, e_mse / snr_np, rtol=1e-9)
  np.testing.assert_allclose(v_mse, (1.0 + snr_np) * x_mse, rtol=1e-9)
  for prediction, mse_p in (("eps", e_mse), ("x0", x_mse), ("v", v_mse)):
    w = eps_mse_weight(schedule, tj, prediction=prediction)
    np.testing.assert_allclose(w * e_mse, mse_p, rtol=1e-4)


def test_fractional_timesteps(schedule):
  ints = jnp.arange(T, dtype=jnp.int32)
  sig = timestep_to_sigma(schedule, ints)
  abar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, T))
  np.testing.assert_allclose(sig, np.sqrt((1.0 - abar) / abar), rtol=1e-5)
  np.testing.assert_allclose(sigma_to_timestep(schedule, sig), np.arange(T), atol=2e-3)
  # Float t at integer values reproduces the tables.
  a_i, s_i = alpha_sigma(schedule, ints)
  a_f, s_f = alpha_sigma(schedule, ints.astype(jnp.float32))
  np.testing.assert_allclose(a_f, a_i, rtol=1e-5)
  np.testing.assert_allclose(s_f, s_i, rtol=1e-5)
  # Halfway between steps, log sigma is the mean of its neighbours.
  half = jnp.asarray([10.5, 700.5])
  np.testing.assert_allclose(jnp.log(timestep_to_sigma(schedule, half)),
                             0.5 * (jnp.log(sig[np.array([10, 700])])
                                    + jnp.log(sig[np.array([11, 701])])), rtol=1e-5)
  np.testing.assert_allclose(sigma_to_timestep(schedule, timestep_to_sigma(schedule, half)), half,
                             atol=2e-3)
  # Conversions accept float t and stay consistent there.
  x = jnp.linspace(-1.0, 1.0, 2 * 4).reshape(2, 4)
  p = jnp.cos(x)
  v = convert_prediction(schedule, x, half, p, source="eps", target="v")
  np.testing.assert_allclose(convert_prediction(schedule, x, half, v, source="v", target="eps"), p,
                             atol=1e-5)


def test_to_eps_fn_with_perfect_models(schedule, data):
  x0, eps, t = data
  x0, eps, t = jnp.asarray(x0, jnp.float32), jnp.asarray(eps, jnp.float32), jnp.asarray(t)
  a, s = alpha_sigma(schedule, t, x0)
  x_t = a * x0 + s * eps
  for prediction in PREDICTIONS:
    model_fn = lambda x, tt, p=prediction: training_target(schedule, x0, tt, eps, prediction=p)
    eps_fn = jax.jit(to_eps_fn(model_fn, schedule, prediction))
    np.testing.assert_allclose(eps_fn(x_t, t), eps, atol=2e-4)
    x0_fn = to_x0_fn(model_fn, schedule, prediction)
    np.testing.assert_allclose(x0_fn(x_t, t), x0, atol=2e-3)
  model = lambda x, tt: x
  assert to_eps_fn(model, schedule, "eps") is model
  assert to_x0_fn(model, schedule, "x0") is model


def test_sampler_runs_every_parameterization(schedule):
  """DDIM on a v- or x0-model equals DDIM on the equivalent eps-model."""

  def eps_model(x, t):
    return jnp.tanh(x) * (1.0 + t[:, None].astype(jnp.float32) / T)

  x_T = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
  outs = {}
  for prediction in PREDICTIONS:
    model_fn = lambda x, t, p=prediction: convert_prediction(schedule, x, t, eps_model(x, t),
                                                             source="eps", target=p)
    eps_fn = to_eps_fn(model_fn, schedule, prediction)
    outs[prediction] = jax.jit(lambda xT, f=eps_fn: ddim_sample(
        f, schedule, jax.random.PRNGKey(1), xT.shape, steps=10, x_T=xT))(x_T)
  np.testing.assert_allclose(outs["v"], outs["eps"], atol=1e-3)
  np.testing.assert_allclose(outs["x0"], outs["eps"], atol=1e-3)


def test_traced_schedule_under_jit(schedule, data):
  x0, eps, t = data
  f = jax.jit(lambda sch, a, b, tt: v_target(sch, a, tt, b))
  got = f(schedule, jnp.asarray(x0, jnp.float32), jnp.asarray(eps, jnp.float32), jnp.asarray(t))
  a, s = np_alpha_sigma(t)
  np.testing.assert_allclose(got, a * eps - s * x0, atol=1e-5)


def test_unknown_prediction_raises(schedule):
  x = jnp.zeros((2, 3))
  t = jnp.zeros((2,), jnp.int32)
  with pytest.raises(ValueError, match="unknown source"):
    convert_prediction(schedule, x, t, x, source="score", target="eps")
  with pytest.raises(ValueError, match="unknown target"):
    convert_prediction(schedule, x, t, x, source="eps", target="mu")
  with pytest.raises(ValueError, match="unknown prediction"):
    to_eps_fn(lambda a, b: a, schedule, "epsilon")
  with pytest.raises(ValueError, match="unknown prediction"):
    eps_mse_weight(schedule, t, prediction="x_0")
