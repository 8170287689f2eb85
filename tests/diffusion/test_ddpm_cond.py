"""The class-conditional DDPM (CFG training) through the loop; x0 / v prediction; samplers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen.diffusion import ddpm_loss, linear_beta_schedule, make_schedule, v_target
from jgen.diffusion.ddpm import DDPM, ConditionalDDPM
from jgen.train import Conditional, load_method
from tests.conftest import load_experiment


@pytest.fixture
def cond_config():
  return load_experiment("ddpm/cond_digits", "smoke")


def _batch(config, n=8, seed=0):
  rng = np.random.default_rng(seed)
  size, ch = config.data.image_size, config.data.channels
  return {"image": jnp.asarray(rng.uniform(-1, 1, (n, size, size, ch)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, 10, n), jnp.int32)}


def test_conditional_only_when_num_classes(cond_config):
  method = load_method(cond_config)
  assert isinstance(method, ConditionalDDPM) and isinstance(method, Conditional)
  assert method.num_classes == 10
  plain = load_method(load_experiment("ddpm/digits", "smoke"))
  assert type(plain) is DDPM and not isinstance(plain, Conditional)
  assert not hasattr(plain, "sample_conditional")
  with pytest.raises(ValueError, match="class-conditional"):
    DDPM(model=method.model, schedule=method.schedule, tx=method.tx, image_shape=(8, 8, 1))
  config = load_experiment("ddpm/digits", "smoke")
  config.sample.guidance_scale = 2.0
  with pytest.raises(ValueError, match="guidance_scale"):
    load_method(config)


def test_train_sample_labels_guidance_and_dpmpp(tmp_path, cond_config):
  workdir = str(tmp_path / "run")
  state = jgen.run.main(cond_config, workdir=workdir, mode="train")
  assert int(state.step) == cond_config.train.num_steps

  paths = jgen.run.main(cond_config, workdir=workdir, mode="sample")
  data = np.load(paths["npz"])
  n = cond_config.sample.num
  assert data["images"].shape == (n, 8, 8, 1)
  np.testing.assert_array_equal(data["labels"], np.arange(n) % 10)
  assert "w2" in paths["npz"]

  cond_config.sample.guidance_scale = 3.0
  cond_config.sample.sampler = "dpmpp_2m"
  cond_config.sample.labels = "3"
  paths = jgen.run.main(cond_config, workdir=workdir, mode="sample")
  data = np.load(paths["npz"])
  assert "dpmpp2m5" in paths["npz"] and "w3" in paths["npz"]
  np.testing.assert_array_equal(data["labels"], np.full(n, 3))
  assert data["images"].shape == (n, 8, 8, 1)


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_prediction_trains_one_step_and_samples(cond_config, prediction):
  cond_config.diffusion.prediction = prediction
  cond_config.model.ch_mult = (1,)  # the smallest U-Net: these tests are about the targets
  cond_config.model.attn_resolutions = ()
  cond_config.sample.sampler = "heun"
  cond_config.sample.steps = 2
  method = load_method(cond_config)
  batch = _batch(cond_config)
  state = method.init(jax.random.PRNGKey(0), batch)
  state, metrics = jax.jit(method.train_step)(state, batch, jax.random.PRNGKey(1))
  assert np.isfinite(float(metrics["loss"]))
  if prediction == "x0":
    return  # one sampler run (v through heun's fractional t) covers to_eps_fn
  images = jax.jit(method.sample_conditional, static_argnums=3)(
      state, jax.random.PRNGKey(2), {"label": jnp.arange(2, dtype=jnp.int32)}, 2)
  assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()


def test_x0_v_loss_targets():
  schedule = make_schedule(linear_beta_schedule(100))
  x0 = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 1), minval=-1, maxval=1)
  rng = jax.random.PRNGKey(1)
  # A perfect predictor has zero loss: x0 directly, v from the same t and noise as the loss.
  assert float(ddpm_loss(lambda x, t: x0, schedule, x0, rng, prediction="x0")[0]) == 0.0
  t_rng, noise_rng = jax.random.split(rng)
  t = jax.random.randint(t_rng, (4,), 0, 100, dtype=jnp.int32)
  noise = jax.random.normal(noise_rng, x0.shape)
  v = v_target(schedule, x0, t, noise)
  np.testing.assert_allclose(ddpm_loss(lambda x, tt: v, schedule, x0, rng,
                                       prediction="v")[0], 0.0, atol=1e-10)


def test_cond_dropout_rate(cond_config):
  method = load_method(cond_config)
  n = 20_000
  labels = jnp.asarray(np.arange(n) % 10, jnp.int32)
  batch = {"image": jnp.zeros((n, 1, 1, 1)), "label": labels}
  conds = method.train_conditions(batch, jax.random.PRNGKey(0))
  dropped = np.asarray(conds["label"] == 10)
  assert abs(dropped.mean() - cond_config.diffusion.cond_drop_prob) < 0.01
  np.testing.assert_array_equal(np.asarray(conds["null"]), dropped)
  np.testing.assert_array_equal(np.asarray(conds["label"])[~dropped], np.asarray(labels)[~dropped])
