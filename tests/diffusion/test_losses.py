"""Tests for jgen.diffusion.losses."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jgen.diffusion import get_schedule, predict_eps_from_x0, q_sample
from jgen.diffusion.ddpm import make_unet
from jgen.diffusion.losses import ddpm_loss

T = 50
SHAPE = (8, 8, 8, 3)


@pytest.fixture(scope="module")
def schedule():
  return get_schedule("linear", T)


@pytest.fixture(scope="module")
def x0():
  return jnp.asarray(np.random.default_rng(0).uniform(-1, 1, SHAPE), jnp.float32)


def test_oracle_eps_gives_zero_loss_and_a_wrong_one_does_not(schedule, x0):
  """An eps_fn that recovers the noise from (x_t, t) and the known x0."""
  oracle = lambda x_t, t: predict_eps_from_x0(schedule, x_t, t, x0)
  for seed in range(3):
    loss, metrics = ddpm_loss(oracle, schedule, x0, jax.random.PRNGKey(seed))
    assert float(loss) < 1e-6
    assert metrics == {"loss": loss}
  shifted_t = lambda x_t, t: predict_eps_from_x0(schedule, x_t, (t + 7) % T, x0)
  loss, _ = ddpm_loss(shifted_t, schedule, x0, jax.random.PRNGKey(0))
  assert float(loss) > 1e-2


def test_matches_reference_with_documented_key_split(schedule, x0):
  eps_fn = lambda x_t, t: jnp.tanh(x_t) * (t[:, None, None, None] / T)
  rng = jax.random.PRNGKey(42)
  t_rng, noise_rng = jax.random.split(rng)
  t = jax.random.randint(t_rng, (SHAPE[0],), 0, T, dtype=jnp.int32)
  noise = jax.random.normal(noise_rng, SHAPE)
  diff = np.asarray(eps_fn(q_sample(schedule, x0, t, noise), t) - noise)
  for loss_type, err in [("mse", diff**2), ("l1", np.abs(diff))]:
    loss, _ = ddpm_loss(eps_fn, schedule, x0, rng, loss_type=loss_type)
    np.testing.assert_allclose(loss, err.reshape(SHAPE[0], -1).mean(1).mean(), rtol=1e-5)


def test_zero_prediction_loss_is_noise_moment(schedule, x0):
  zeros = lambda x_t, t: jnp.zeros_like(x_t)
  mse = np.mean([ddpm_loss(zeros, schedule, x0, jax.random.PRNGKey(s))[0] for s in range(4)])
  l1 = np.mean(
      [ddpm_loss(zeros, schedule, x0, jax.random.PRNGKey(s), loss_type="l1")[0] for s in range(4)])
  assert mse == pytest.approx(1.0, abs=0.06)
  assert l1 == pytest.approx(np.sqrt(2 / np.pi), abs=0.04)


def test_l1_vs_mse_on_constant_error(schedule, x0):
  off = lambda x_t, t: predict_eps_from_x0(schedule, x_t, t, x0) + 0.5
  rng = jax.random.PRNGKey(1)
  mse, _ = ddpm_loss(off, schedule, x0, rng, loss_type="mse")
  l1, _ = ddpm_loss(off, schedule, x0, rng, loss_type="l1")
  np.testing.assert_allclose(mse, 0.25, atol=1e-4)
  np.testing.assert_allclose(l1, 0.5, atol=1e-4)


def test_timesteps_are_uniform_over_the_full_range(x0):
  small = get_schedule("linear", 4)
  seen = []

  def eps_fn(x_t, t):
    seen.append(np.asarray(t))
    assert t.dtype == jnp.int32 and t.shape == (SHAPE[0],)
    return jnp.zeros_like(x_t)

  for seed in range(16):
    ddpm_loss(eps_fn, small, x0, jax.random.PRNGKey(seed))
  counts = np.bincount(np.concatenate(seen), minlength=5)
  assert counts[4] == 0 and counts[:4].min() >= 16


def test_unknown_loss_type_raises_before_calling_model(schedule, x0):

  def eps_fn(x_t, t):
    raise AssertionError("model must not be called")

  with pytest.raises(ValueError, match="huber"):
    ddpm_loss(eps_fn, schedule, x0, jax.random.PRNGKey(0), loss_type="huber")


def test_jit_and_grad(schedule, x0):

  def loss_fn(w, rng):
    return ddpm_loss(lambda x_t, t: w * x_t, schedule, x0, rng)[0]

  rng = jax.random.PRNGKey(5)
  loss_jit, grad = jax.jit(jax.value_and_grad(loss_fn))(jnp.float32(0.3), rng)
  np.testing.assert_allclose(loss_jit, loss_fn(jnp.float32(0.3), rng), rtol=1e-5)
  assert np.isfinite(grad) and grad != 0.0


def test_shape_mismatch_of_model_output_is_caught(schedule, x0):
  with pytest.raises(AssertionError):
    ddpm_loss(lambda x_t, t: x_t[..., :1], schedule, x0, jax.random.PRNGKey(0))


def test_compute_dtypes_come_from_the_one_table():
  """float16 is refused (jgen does not scale losses); bfloat16 and float32 are offered."""
  model = ml_collections.ConfigDict(dict(ch=8, ch_mult=(1,), num_res_blocks=1,
                                         attn_resolutions=(), dropout=0.0, num_groups=4,
                                         num_classes=0, dtype="bfloat16"))
  assert make_unet(model).dtype == jnp.bfloat16
  model.dtype = "float16"
  with pytest.raises(ValueError, match="loss scaling"):
    make_unet(model)
