"""Each autoencoder method through the whole loop on its smoke config: train (with an eval),
checkpoint, then `--mode=sample` from the checkpoint; plus checks on the trained states."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen.ops import likelihoods as lik
from jgen.autoencoder.common import load_holdout
from jgen.train import Checkpointer, load_method
from tests.conftest import checkpoint_steps, load_experiment

NAMES = ("ae_digits", "dae_digits", "vae_digits", "vqvae_digits")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Smoke runs shared by the tests below, each trained once on first use (so pytest-xdist
  workers train only the methods of their tests): name -> (config, workdir, final state)."""
  cache = {}

  def get(name):
    if name not in cache:
      config = load_experiment(f"autoencoder/{name}", "smoke")
      workdir = str(tmp_path_factory.mktemp(name))
      cache[name] = (config, workdir, jgen.run.main(config, workdir=workdir, mode="train"))
    return cache[name]

  return get


@pytest.mark.parametrize("name", NAMES)
def test_train_then_sample(runs, name):
  config, workdir, state = runs(name)
  assert int(state.step) == config.train.num_steps
  assert checkpoint_steps(workdir) == [4]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  images = np.load(paths["npz"])["images"]
  assert images.shape == (config.sample.num, 8, 8, 1) and images.dtype == np.uint8
  if name in ("ae_digits", "vqvae_digits"):  # inputs interleaved with reconstructions
    holdout = load_method(config).holdout
    expected = np.round((holdout[: len(images) // 2] + 1) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(images[0::2], expected)


def test_vqvae_statistics_are_model_state_trained_by_hand_and_checkpointed(runs):
  config, workdir, state = runs("vqvae_digits")
  assert set(state.params) == {"encoder", "decoder", "codebook"}  # params are params only
  stats = state.model_state["vq_stats"]
  assert not np.allclose(stats["counts"], 1.0)  # moved from their initial value
  assert "vq_stats" not in state.emas["ema"]  # never averaged
  assert np.isfinite(state.params["codebook"]).all()
  with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    restored = ckpt.restore(state.checkpoint_items())
  np.testing.assert_array_equal(restored["model_state"]["vq_stats"]["counts"], stats["counts"])
  np.testing.assert_array_equal(restored["model_state"]["vq_stats"]["sums"], stats["sums"])
  np.testing.assert_array_equal(restored["params"]["codebook"], state.params["codebook"])


def test_iwae_with_one_sample_is_the_elbo(runs):
  config, _, state = runs("vae_digits")
  vae = load_method(config)
  params = state.params
  x = jnp.asarray(load_holdout(config, 8))

  @jax.jit
  def run(rng, keys):
    got = vae.iwae_log_likelihood(params, x, rng, 1)
    # The same sample by hand: log p(x|z) - (log q(z|x) - log p(z)) on the same binarization.
    data_rng, z_rng = jax.random.split(rng)
    target, x_in = vae.data(x, data_rng)
    mean, logvar = vae.encode(params, x_in)
    z = lik.reparameterize(jax.random.split(z_rng, 1)[0], mean, logvar)
    by_hand = (vae.log_px_z(params, z, target) - lik.diag_gaussian_log_prob(z, mean, logvar)
               + lik.standard_normal_log_prob(z))
    one = jax.vmap(lambda k: vae.iwae_log_likelihood(params, x, k, 1))(keys)
    rec, kl = jax.vmap(lambda k: vae.elbo_terms(params, {"image": x}, k))(keys)
    return got, by_hand, one, rec - kl

  got, by_hand, one, elbo = run(jax.random.key(5), jax.random.split(jax.random.key(6), 512))
  np.testing.assert_allclose(got, by_hand, rtol=1e-5)
  # Over samples (binarizations and posterior draws) it averages to the analytic-KL ELBO.
  stderr = np.sqrt((np.var(one, 0) + np.var(elbo, 0)) / one.shape[0])
  assert np.all(np.abs(one.mean(0) - elbo.mean(0)) < 4 * stderr + 1e-3)


def test_vae_prior_samples_and_interpolation(runs):
  config, _, state = runs("vae_digits")
  vae = load_method(config)
  x = jnp.zeros((2, 8, 8, 1))
  path = jax.jit(vae.interpolate, static_argnums=3)(state.ema_params, x[0], x[1] + 0.5, 5)
  assert path.shape == (5, 8, 8, 1) and float(jnp.abs(path).max()) <= 1.0


def test_dae_needs_a_corruption():
  config = load_experiment("autoencoder/dae_digits", "smoke")
  config.ae.corruption = "none"
  with pytest.raises(ValueError, match="corruption"):
    load_method(config)
