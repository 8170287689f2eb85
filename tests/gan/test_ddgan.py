"""gan.ddgan against closed forms: the discretized VP schedule, the posterior draw's moments (and
its agreement with the forward pair's Gaussian), R1 on x_{t-1} by finite differences, the
sampler against a hand-written chain; one smoke run through the loop with resume and sampling."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen.gan import ddgan, updates
from jgen.nn.ddgan import TimeConditionalDiscriminator
from jgen.train import load_method
from tests.conftest import checkpoint_steps, load_experiment


def _abar_reference(s, beta_min, beta_max):
  """1 - var(s) of the reference's `var_func_vp`: exp(2 (-s^2 (b1 - b0) / 4 - s b0 / 2))."""
  log_mean_coeff = -0.25 * s**2 * (beta_max - beta_min) - 0.5 * s * beta_min
  return np.exp(2.0 * log_mean_coeff)


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_vp_betas_match_the_discretized_sde(steps):
  s = np.linspace(0.0, 1.0, steps + 1) * (1.0 - 1e-3) + 1e-3
  abar = _abar_reference(s, 0.1, 20.0)
  expected = 1.0 - abar[1:] / abar[:-1]
  betas = ddgan.vp_betas(steps)
  np.testing.assert_allclose(betas, expected, rtol=1e-12)
  # abar_{T-1} of the discrete chain is abar(1) / abar(s_min) for every T.
  np.testing.assert_allclose(np.prod(1.0 - betas), abar[-1] / abar[0], rtol=1e-12)
  schedule = ddgan.ddgan_schedule(steps)
  np.testing.assert_allclose(schedule.alphas_cumprod, abar[1:] / abar[0], rtol=1e-5)
  if steps == 4:
    np.testing.assert_allclose(betas, [0.4783, 0.8492, 0.9564, 0.9874], atol=1e-4)


def test_bad_schedules_raise():
  for kwargs in ({"num_steps": 0}, {"num_steps": 4, "beta_min": 0.0},
                 {"num_steps": 4, "beta_min": 2.0, "beta_max": 1.0},
                 {"num_steps": 4, "s_min": 1.0}):
    with pytest.raises(ValueError):
      ddgan.vp_betas(**kwargs)


def _posterior_numpy(betas, t, x0, x_t):
  """Mean and variance of q(x_{t-1} | x_t, x0) from the betas alone (float64)."""
  abar = np.cumprod(1.0 - betas)
  abar_prev = np.append(1.0, abar[:-1])[t]
  beta, abar_t = betas[t], abar[t]
  mean = (beta * np.sqrt(abar_prev) / (1 - abar_t) * x0
          + (1 - abar_prev) * np.sqrt(1 - beta) / (1 - abar_t) * x_t)
  return mean, beta * (1 - abar_prev) / (1 - abar_t)


def test_posterior_draw_has_the_ddpm_posterior_moments():
  """Over 200,000 draws per timestep the sample mean and variance match the closed form
  (within 5 standard errors); t = 0 returns x0 exactly."""
  steps, m = 4, 200_000
  schedule = ddgan.ddgan_schedule(steps)
  betas = ddgan.vp_betas(steps)
  x0, x_t = 0.6, -1.3
  draw = jax.jit(lambda t, key: ddgan.posterior_sample(
      schedule, jnp.full((m, 1, 1, 1), x0), jnp.full((m, 1, 1, 1), x_t), jnp.full((m,), t),
      jax.random.normal(key, (m, 1, 1, 1))))
  for t in range(steps):
    x = np.asarray(draw(t, jax.random.key(t)), np.float64).ravel()
    mean, var = _posterior_numpy(betas, t, x0, x_t)
    if t == 0:
      np.testing.assert_allclose(x, x0, rtol=1e-6)
      continue
    assert abs(x.mean() - mean) < 5 * np.sqrt(var / m), (t, x.mean(), mean)
    assert abs(x.var() - var) < 5 * var * np.sqrt(2.0 / m), (t, x.var(), var)


def test_posterior_is_the_conditional_of_the_forward_pair():
  """For fixed x0, (x_{t-1}, x_t) from `q_sample_pair` are jointly Gaussian; regressing x_{t-1}
  on x_t gives the posterior's x_t coefficient, intercept c1 x0 and residual variance."""
  steps, m, x0 = 4, 200_000, 0.8
  schedule = ddgan.ddgan_schedule(steps)
  betas = ddgan.vp_betas(steps)
  for t in range(1, steps):
    k1, k2 = jax.random.split(jax.random.key(10 + t))
    shape = (m, 1, 1, 1)
    x_prev, x_t = ddgan.q_sample_pair(schedule, jnp.full(shape, x0), jnp.full((m,), t),
                                      jax.random.normal(k1, shape), jax.random.normal(k2, shape))
    a, b = np.asarray(x_prev, np.float64).ravel(), np.asarray(x_t, np.float64).ravel()
    slope = np.cov(a, b)[0, 1] / b.var()
    residual = (a - a.mean() - slope * (b - b.mean())).var()
    # The closed form: mean(x0, x_t) = c1 x0 + c2 x_t, so c2 = d mean / d x_t.
    c1x0, var = _posterior_numpy(betas, t, x0, 0.0)
    c2 = _posterior_numpy(betas, t, x0, 1.0)[0] - c1x0
    np.testing.assert_allclose(slope, c2, atol=0.01)
    np.testing.assert_allclose(a.mean() - slope * b.mean(), c1x0, atol=0.01)
    np.testing.assert_allclose(residual, var, rtol=0.02)


@pytest.fixture(scope="module")
def smoke():
  config = load_experiment("gan/ddgan_digits", "smoke")
  method = load_method(config)
  s = config.data.image_size
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.uniform(-1, 1, (8, s, s, 1)), jnp.float32)}
  return config, method, batch, method.init(jax.random.key(0), batch)


def test_r1_differentiates_x_prev_only_and_matches_finite_differences(smoke):
  """updates.r1 on the DDGAN critic: gamma / 2 mean_i ||d D(x_prev, x_t, t)_i / d x_prev_i||^2
  with x_t, t fixed, against central differences in float64 NumPy (minibatch stddev off, so
  each example's score depends on its own inputs only)."""
  config, method, batch, state = smoke
  d = TimeConditionalDiscriminator(ch=4, ch_mult=(1, 2), t_emb_dim=8, mbstd_group=0)
  b, shape = 2, batch["image"].shape[1:]
  rng = np.random.default_rng(3)
  x_prev = rng.standard_normal((b, *shape))
  x_t = jnp.asarray(rng.standard_normal((b, *shape)), jnp.float32)
  t = jnp.array([1, 3], jnp.int32)
  params = d.init(jax.random.key(1), x_prev, x_t, t, train=False)["params"]
  # Zero-initialised output convs would make the critic constant: randomise every leaf.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, p.shape)
                                     for k, p in zip(keys, leaves)])
  m = ddgan.DDGAN(generator=method.generator, discriminator=d, schedule=method.schedule,
                  tx_g=method.tx_g, tx_d=method.tx_d, image_shape=method.image_shape)
  gamma = 0.7
  reg = updates.r1(m.d_apply, gamma=gamma)
  penalty, _ = jax.jit(lambda p, x: reg.fn({"discriminator": p}, {"discriminator": {}},
                                           {"real": x, "conditions": {"x_t": x_t, "t": t}},
                                           jax.random.key(0)))(params, jnp.asarray(x_prev,
                                                                                   jnp.float32))
  with jax.enable_x64(True):
    p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    d64 = d.clone(dtype=jnp.float64)
    score = jax.jit(lambda x: d64.apply({"params": p64}, x, x_t.astype(jnp.float64), t,
                                      train=False))
    n, h = x_prev[0].size, 1e-4
    eye = np.eye(n).reshape(n, *shape)
    sq = 0.0
    for i in range(b):
      plus = np.repeat(x_prev[None], n, 0).reshape(n, b, *shape)
      minus = plus.copy()
      plus[:, i] += h * eye
      minus[:, i] -= h * eye
      f = lambda xs: np.asarray(jax.vmap(score)(jnp.asarray(xs)))[:, i]
      grad = (f(plus) - f(minus)) / (2 * h)
      sq += np.sum(grad**2)
  np.testing.assert_allclose(float(penalty), 0.5 * gamma * sq / b, rtol=1e-3)


def test_sampler_is_the_hand_written_chain(smoke):
  """sample = x_{T-1} ~ N(0, I), then T times x0 = G(x_k, k, z), x_{k-1} = mean + sigma noise
  (NumPy posterior from the betas), with the documented keys."""
  config, method, batch, state = smoke
  params = jax.tree.map(lambda p: p + 0.05, state.ema_params["generator"])
  n, steps = 4, method.num_steps
  rng = jax.random.key(5)
  out = np.asarray(jax.jit(method.sample_with_params, static_argnums=2)(params, rng, n))
  shape = (n, *method.image_shape)
  betas = ddgan.vp_betas(steps, beta_min=config.diffusion.beta_min,
                         beta_max=config.diffusion.beta_max)
  x = np.asarray(jax.random.normal(jax.random.fold_in(rng, steps), shape), np.float64)
  g = jax.jit(lambda x, t, z: method.generator.apply({"params": params}, x, t, z, train=False))
  for i in range(steps):
    k = steps - 1 - i
    k_z, k_noise = jax.random.split(jax.random.fold_in(rng, i))
    x0 = np.asarray(g(jnp.asarray(x, jnp.float32), jnp.full((n,), k, jnp.int32),
                      jax.random.normal(k_z, (n, method.z_dim))), np.float64)
    mean, var = _posterior_numpy(betas, k, x0, x)
    x = mean + np.sqrt(var) * np.asarray(jax.random.normal(k_noise, shape))
  np.testing.assert_allclose(out, x, atol=1e-4)
  assert out.shape == shape and np.all(np.abs(out) <= 1.0)


def test_sample_steps_other_than_t_is_an_error():
  config = load_experiment("gan/ddgan_digits", "smoke")
  config.sample.steps = 3
  with pytest.raises(ValueError, match="num_timesteps = 4"):
    load_method(config)
  config.sample.steps = 4
  assert load_method(config).num_steps == 4


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The :smoke run straight to 4 steps, and 2 steps then resumed to 4."""
  config = load_experiment("gan/ddgan_digits", "smoke")
  straight_dir = str(tmp_path_factory.mktemp("ddgan_straight"))
  straight = jgen.run.main(config, workdir=straight_dir, mode="train")
  resumed_dir = str(tmp_path_factory.mktemp("ddgan_resumed"))
  config.train.num_steps = 2
  jgen.run.main(config, workdir=resumed_dir, mode="train")
  assert checkpoint_steps(resumed_dir) == [2]
  config.train.num_steps = 4
  resumed = jgen.run.main(config, workdir=resumed_dir, mode="train")
  return config, straight_dir, straight, resumed


@pytest.mark.slow  # 44 s cold (three runs of the loop; most of it compiling)
def test_train_resume_and_sample_through_the_loop(runs):
  config, workdir, straight, resumed = runs
  assert int(straight.step) == int(resumed.step) == 4
  assert checkpoint_steps(workdir) == [2, 4]
  assert set(straight.params) == {"generator", "discriminator"}
  assert set(straight.emas["ema"]) == {"generator"}
  for a, b in zip(jax.tree.leaves((straight.params, straight.emas, straight.opt_state)),
                  jax.tree.leaves((resumed.params, resumed.emas, resumed.opt_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  assert os.path.basename(paths["npz"]) == "step4_ddgan4_ema.npz"
  images = np.load(paths["npz"])["images"]
  assert images.shape == (config.sample.num, 8, 8, 1) and images.dtype == np.uint8
  assert images.std() > 0


def test_digits_schedule_lets_the_discriminator_see_the_top_step():
  """Issue 37: with the paper's beta_max 20 (fit for CIFAR-10's 3,072 dimensions) the top
  step's x_{T-2} carried its x0 at c1 / sigma = 0.058 per pixel, too little for the
  discriminator on 16x16 digits; the digits config must keep it >= 0.2 while x_{T-1} stays
  close to N(0, I) (abar_{T-1} < 0.01)."""
  config = load_experiment("gan/ddgan_digits")
  dif = config.diffusion
  betas = ddgan.vp_betas(dif.num_timesteps, beta_min=dif.beta_min, beta_max=dif.beta_max)
  abar = np.cumprod(1.0 - betas)
  top = dif.num_timesteps - 1
  c1 = np.sqrt(abar[top - 1]) * betas[top] / (1.0 - abar[top])
  sigma = np.sqrt(betas[top] * (1.0 - abar[top - 1]) / (1.0 - abar[top]))
  assert c1 / sigma >= 0.2 and abar[top] < 0.01
  paper = ddgan.vp_betas(dif.num_timesteps)
  abar_p = np.cumprod(1.0 - paper)
  c1_p = np.sqrt(abar_p[top - 1]) * paper[top] / (1.0 - abar_p[top])
  sigma_p = np.sqrt(paper[top] * (1.0 - abar_p[top - 1]) / (1.0 - abar_p[top]))
  np.testing.assert_allclose(c1_p / sigma_p, 0.058, atol=1e-3)
