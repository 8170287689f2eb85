"""Tests for classifier guidance: the noisy classifier, the guided denoisers and their method."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen.diffusion import ddim_sample, ddpm_sample, get_schedule, q_sample
from jgen.diffusion.classifier_guidance import (
    classifier_grad_fn,
    classifier_guided_ddpm_sample,
    classifier_guided_eps_fn,
    classifier_log_prob_grad,
)
from jgen.diffusion.noisy_classifier import make_method, noisy_classifier_loss
from jgen.nn.classifier import NoisyClassifier
from tests.conftest import load_experiment

T = 20
SHAPE = (2, 4, 4, 1)
SCHEDULE = get_schedule("linear", T, beta_start=1e-3, beta_end=0.2)


def tiny_classifier():
  return NoisyClassifier(ch=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(2,),
                         num_classes=3, num_groups=2)


def linear_logits_fn(w, b):
  """A smooth toy classifier: logits = tanh(x) . W + b * t / T, per example."""
  def logits_fn(x, t):
    feats = jnp.tanh(x.reshape(x.shape[0], -1))
    return feats @ w + b * t[:, None].astype(x.dtype) / T
  return logits_fn


def toy_eps_fn(x, t):
  """A t-dependent nonlinear stand-in for a noise predictor."""
  return 0.5 * jnp.sin(x) * (1.0 + t[:, None, None, None].astype(x.dtype) / T)


def central_differences(f, x, h):
  """d f / d x of a scalar f by central differences over every entry of x."""
  flat = np.asarray(x).ravel()
  out = np.zeros_like(flat)
  for k in range(flat.size):
    e = np.zeros_like(flat)
    e[k] = h
    out[k] = (f((flat + e).reshape(x.shape)) - f((flat - e).reshape(x.shape))) / (2 * h)
  return out.reshape(x.shape)


def np_log_prob(logits_fn, x, t, labels):
  logits = np.asarray(logits_fn(jnp.asarray(x), t), np.float64)
  logits = logits - logits.max(-1, keepdims=True)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return float(log_p[np.arange(len(labels)), labels].sum())


# ---------------------------------------------------------------------------- the classifier


def test_classifier_shapes_and_errors():
  model = tiny_classifier()
  x = jnp.ones(SHAPE)
  t = jnp.array([0, 5], jnp.int32)
  params = model.init(jax.random.key(0), x, t, train=False)
  logits = model.apply(params, x, t, train=False)
  assert logits.shape == (2, 3) and logits.dtype == jnp.float32
  np.testing.assert_array_equal(logits, 0.0)  # zero-initialised head: uniform p(y)
  assert {"temb_dense0", "conv_in", "down_0_block_0", "down_0_downsample",
          "down_1_block_0_attn", "mid_block_1", "mid_attn_1", "norm_out", "head"
          } <= set(params["params"])
  with pytest.raises(ValueError, match="divisible"):
    model.apply(params, jnp.ones((2, 5, 5, 1)), t, train=False)
  with pytest.raises(ValueError, match="t must have shape"):
    model.apply(params, x, jnp.zeros((3,), jnp.int32), train=False)


# ---------------------------------------------------------------------------- the gradient


def test_log_prob_grad_matches_finite_differences_float64():
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(16, 3)))
    b = jnp.asarray(rng.normal(size=(3,)))
    logits_fn = linear_logits_fn(w, b)
    x = rng.normal(size=SHAPE)
    t = jnp.array([3, 17], jnp.int32)
    labels = np.array([2, 0])
    grad = classifier_log_prob_grad(logits_fn, jnp.asarray(x), t, jnp.asarray(labels))
    assert grad.dtype == jnp.float64 and grad.shape == SHAPE
    fd = central_differences(lambda z: np_log_prob(logits_fn, z, t, labels), x, 1e-6)
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-9)


def test_log_prob_grad_of_noisy_classifier_is_per_example_and_matches_finite_differences():
  model = tiny_classifier()
  x = jax.random.normal(jax.random.key(1), SHAPE)
  t = jnp.array([2, 11], jnp.int32)
  labels = jnp.array([1, 2], jnp.int32)
  params = model.init(jax.random.key(0), x, t, train=False)
  # Give the zero-initialised head weights so that the gradient reaches the whole network.
  head = params["params"]["head"]
  params["params"]["head"] = {
      "kernel": jax.random.normal(jax.random.key(2), head["kernel"].shape),
      "bias": head["bias"]}
  logits_fn = jax.jit(lambda z, s: model.apply(params, z, s, train=False))
  grad = np.asarray(jax.jit(classifier_grad_fn(logits_fn, labels))(x, t))
  assert np.abs(grad).max() > 1e-4
  single = classifier_log_prob_grad(logits_fn, x[1:], t[1:], labels[1:])
  np.testing.assert_allclose(grad[1:], single, rtol=1e-4, atol=1e-6)
  fd = central_differences(lambda z: np_log_prob(logits_fn, z, t, np.asarray(labels)),
                           np.asarray(x, np.float32), 1e-2)
  np.testing.assert_allclose(grad, fd, rtol=0.05, atol=2e-3 * np.abs(grad).max())


# ---------------------------------------------------------------------------- guided denoisers


def test_guided_eps_matches_numpy():
  rng = np.random.default_rng(3)
  grad = rng.normal(size=SHAPE).astype(np.float32)
  x = jnp.asarray(rng.normal(size=SHAPE), jnp.float32)
  t = jnp.array([0, 19], jnp.int32)
  scale = 2.5
  guided = classifier_guided_eps_fn(toy_eps_fn, lambda z, s: jnp.asarray(grad), SCHEDULE, scale)
  abar = np.cumprod(1.0 - np.linspace(1e-3, 0.2, T))
  want = (np.asarray(toy_eps_fn(x, t)) -
          np.sqrt(1.0 - abar[np.asarray(t)])[:, None, None, None] * scale * grad)
  np.testing.assert_allclose(guided(x, t), want, rtol=1e-5, atol=1e-6)


def test_scale_zero_leaves_eps_and_samplers_unchanged():
  def failing_grad(x, t):
    raise AssertionError("the classifier must not be called at scale 0")

  assert classifier_guided_eps_fn(toy_eps_fn, failing_grad, SCHEDULE, 0.0) is toy_eps_fn
  grad_fn = lambda x, t: jnp.cos(x) * 3.0
  zero = jnp.zeros((), jnp.float32)  # a traced zero goes through the guided formula
  rng = jax.random.key(4)
  x = jax.random.normal(rng, SHAPE)
  t = jnp.array([1, 7], jnp.int32)
  guided = classifier_guided_eps_fn(toy_eps_fn, grad_fn, SCHEDULE, zero)
  np.testing.assert_array_equal(guided(x, t), toy_eps_fn(x, t))

  ddim = jax.jit(lambda fn_scale: ddim_sample(
      classifier_guided_eps_fn(toy_eps_fn, grad_fn, SCHEDULE, fn_scale), SCHEDULE, rng,
      SHAPE, steps=5, eta=1.0))
  plain_ddim = ddim_sample(toy_eps_fn, SCHEDULE, rng, SHAPE, steps=5, eta=1.0)
  np.testing.assert_allclose(ddim(zero), plain_ddim, rtol=1e-6, atol=1e-6)

  plain = ddpm_sample(toy_eps_fn, SCHEDULE, rng, SHAPE)
  for scale in (0.0, zero):
    guided_ddpm = classifier_guided_ddpm_sample(toy_eps_fn, SCHEDULE, rng, SHAPE, grad_fn, scale)
    np.testing.assert_allclose(guided_ddpm, plain, rtol=1e-6, atol=1e-6)


def test_guided_ddpm_shifts_the_posterior_mean_by_scale_sigma_grad():
  # Without clipping the posterior mean is linear in eps: mu = c1 x0 + c2 x_t with
  # x0 = x_t / sqrt(abar) - sqrt(1/abar - 1) eps, so the mean shift s Sigma g equals
  # ddpm_sample on eps - s Sigma g / (c1 sqrt(1/abar - 1)).
  grad_fn = lambda x, t: jnp.cos(x) - 0.3 * x
  scale = 1.7
  rng = jax.random.key(5)

  def shifted_eps(x, t):
    coef = (SCHEDULE.posterior_variance[t] /
            (SCHEDULE.posterior_mean_coef1[t] * SCHEDULE.sqrt_recipm1_alphas_cumprod[t]))
    return toy_eps_fn(x, t) - scale * coef[:, None, None, None] * grad_fn(x, t)

  want = ddpm_sample(shifted_eps, SCHEDULE, rng, SHAPE, clip_denoised=False)
  got = classifier_guided_ddpm_sample(toy_eps_fn, SCHEDULE, rng, SHAPE, grad_fn, scale,
                                      clip_denoised=False)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  unguided = ddpm_sample(toy_eps_fn, SCHEDULE, rng, SHAPE, clip_denoised=False)
  assert np.abs(np.asarray(got) - np.asarray(unguided)).max() > 1e-2


def test_guidance_raises_the_target_class_probability():
  rng = np.random.default_rng(6)
  w = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
  logits_fn = linear_logits_fn(w, jnp.zeros((3,), jnp.float32))
  shape = (8, 4, 4, 1)
  labels = jnp.full((8,), 1, jnp.int32)
  grad_fn = classifier_grad_fn(logits_fn, labels)
  key = jax.random.key(7)
  zeros = jnp.zeros((8,), jnp.int32)

  def mean_log_p(x):
    return float(jnp.mean(jax.nn.log_softmax(logits_fn(x, zeros))[:, 1]))

  plain = ddim_sample(toy_eps_fn, SCHEDULE, key, shape, steps=10)
  guided = ddim_sample(classifier_guided_eps_fn(toy_eps_fn, grad_fn, SCHEDULE, 5.0), SCHEDULE,
                       key, shape, steps=10)
  assert mean_log_p(guided) > mean_log_p(plain) + 0.1
  plain = ddpm_sample(toy_eps_fn, SCHEDULE, key, shape)
  guided = classifier_guided_ddpm_sample(toy_eps_fn, SCHEDULE, key, shape, grad_fn, 5.0)
  assert mean_log_p(guided) > mean_log_p(plain) + 0.1


# ---------------------------------------------------------------------------- the method


def test_noisy_classifier_loss_matches_numpy():
  rng = np.random.default_rng(8)
  w = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(3,)), jnp.float32)
  logits_fn = linear_logits_fn(w, b)
  x0 = jnp.asarray(rng.uniform(-1, 1, size=SHAPE), jnp.float32)
  labels = jnp.array([0, 2], jnp.int32)
  key = jax.random.key(9)
  loss, metrics = noisy_classifier_loss(logits_fn, SCHEDULE, x0, labels, key, t_max=5)
  t_rng, noise_rng = jax.random.split(key)
  t = jax.random.randint(t_rng, (2,), 0, 5, dtype=jnp.int32)
  assert int(t.max()) < 5
  x_t = q_sample(SCHEDULE, x0, t, jax.random.normal(noise_rng, SHAPE))
  logits = np.asarray(logits_fn(x_t, t), np.float64)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  np.testing.assert_allclose(loss, -log_p[[0, 1], [0, 2]].mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"],
                             np.mean(logits.argmax(-1) == np.asarray(labels)))
  with pytest.raises(ValueError, match="t_max"):
    noisy_classifier_loss(logits_fn, SCHEDULE, x0, labels, key, t_max=T + 1)


def test_full_config_builds():
  config = load_experiment("ddpm/noisy_classifier_digits")
  method = make_method(config)
  assert method.schedule.num_timesteps == 1000 and method.low_noise_t_max == 250
  batch = {"image": jax.ShapeDtypeStruct((64, 16, 16, 1), jnp.float32),
           "label": jax.ShapeDtypeStruct((64,), jnp.int32)}
  state = jax.eval_shape(method.init, jax.random.key(0), batch)
  assert state.params["params"]["head"]["kernel"].shape == (64, 10)
  with pytest.raises(ValueError, match="unknown config argument"):
    load_experiment("ddpm/noisy_classifier_digits", "big")


def test_smoke_method_trains_and_evaluates(tmp_path):
  config = load_experiment("ddpm/noisy_classifier_digits", "smoke")
  workdir = str(tmp_path / "run")
  state = jgen.run.main(config, workdir=workdir, mode="train")
  assert int(state.step) == config.train.num_steps
  assert os.path.exists(os.path.join(workdir, "samples", "step_0000004.png"))
  method = make_method(config)
  batch = {"image": jnp.zeros((4, 8, 8, 1)), "label": jnp.zeros((4,), jnp.int32)}
  metrics = jax.jit(method.train_step)(state, batch, jax.random.key(0))[1]
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
  np.testing.assert_array_equal(method.sample(state, jax.random.key(0), 3),
                                np.zeros((3, 8, 8, 1)))
  with pytest.raises(KeyError, match="labelled"):
    method.loss_fn(state.params, {"image": batch["image"]}, jax.random.key(0))

  result = jgen.run.main(config, workdir=workdir, mode="eval")
  assert result["step"] == config.train.num_steps
  for key in ("loss", "loss_low_noise"):
    assert np.isfinite(result[key])
  for key in ("accuracy", "accuracy_low_noise"):
    assert 0.0 <= result[key] <= 1.0
