"""The code transformer through the loop on a frozen vqvae_digits:smoke run (train, eval,
sample with labels; the frozen VQ-VAE never changes), its loss against NumPy, clear errors."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen.autoencoder.common import load_holdout
from jgen.autoregressive import code_transformer
from jgen.train import init_from as init_from_lib
from jgen.train import load_method, run_record
from jgen.train.method import Conditional, Evaluates
from tests.conftest import checkpoint_steps, load_experiment


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
  """A tiny trained VQ-VAE (stage one)."""
  workdir = str(tmp_path_factory.mktemp("vqvae"))
  config = load_experiment("autoencoder/vqvae_digits", "smoke")
  config.train.eval_every = 0
  jgen.run.main(config, workdir=workdir)
  return workdir


def _config(vq_workdir):
  config = load_experiment("autoregressive/vq_transformer_digits", "smoke")
  config.init_from.workdir = vq_workdir
  return config


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_train_eval_sample_through_the_loop(tmp_path, vq_run):
  config = _config(vq_run)
  loaded, _ = init_from_lib.load(init_from_lib.InitFrom(vq_run))
  workdir = str(tmp_path / "prior")
  state = jgen.run.main(config, workdir=workdir)
  assert int(state.step) == config.train.num_steps
  assert set(state.params) == {"transformer"} and set(state.emas["ema"]) == {"transformer"}
  # The frozen VQ-VAE is the trained run's EMA parameters, bitwise, after training too.
  for a, b in zip(_leaves(state.frozen[code_transformer.FROZEN]), _leaves(loaded),
                  strict=True):
    np.testing.assert_array_equal(a, b)

  result = jgen.run.main(config, workdir=workdir, mode="eval")
  num_codes = load_experiment("autoencoder/vqvae_digits", "smoke").vq.num_codes
  assert 0.0 < result["nats_per_code"] < 2 * math.log(num_codes)
  np.testing.assert_allclose(result["bits_per_code"], result["nats_per_code"] / math.log(2),
                             rtol=1e-6)

  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  saved = np.load(paths["npz"])
  assert saved["images"].shape == (config.sample.num, 8, 8, 1)
  np.testing.assert_array_equal(saved["labels"], np.arange(config.sample.num) % 10)
  assert "codes_T1" in paths["npz"]

  # Stop after 2 steps, resume to 4: bitwise the straight run (frozen arrays from the
  # checkpoint, checked against the init_from record).
  resumed_dir = str(tmp_path / "resumed")
  config.train.num_steps = 2
  jgen.run.main(config, workdir=resumed_dir)
  assert checkpoint_steps(resumed_dir) == [2]  # the resume starts from step 2, not from 0
  config.train.num_steps = 4
  resumed = jgen.run.main(config, workdir=resumed_dir)
  for a, b in zip(_leaves(state.checkpoint_items()), _leaves(resumed.checkpoint_items()),
                  strict=True):
    np.testing.assert_array_equal(a, b)


def test_loss_is_the_numpy_cross_entropy_of_the_codes(vq_run):
  config = _config(vq_run)
  method = load_method(config)
  loaded, _ = init_from_lib.load(init_from_lib.InitFrom(vq_run))
  x = jnp.asarray(load_holdout(config, 8))
  labels = jnp.arange(8, dtype=jnp.int32) % 10
  batch = {"image": x, "label": labels}
  state = jax.jit(method.init)(jax.random.key(0), batch)
  frozen = {code_transformer.FROZEN: loaded}
  nats, metrics = jax.jit(lambda p, f, b, r: method.loss_fn(p, f, b, r, train=False))(
      state.params, frozen, batch, jax.random.key(1))

  # NumPy: nearest codes of the encoder outputs (raster order), then -mean log softmax.
  book = np.asarray(loaded["codebook"], np.float64)
  z = np.asarray(jax.jit(method.vq.encode)(loaded, x), np.float64).reshape(8, -1, book.shape[1])
  codes = np.argmin(((z[:, :, None, :] - book[None, None]) ** 2).sum(-1), axis=-1)
  apply = jax.jit(lambda p, c, y: method.model.apply({"params": p}, c, label=y))
  logits = np.asarray(apply(state.params["transformer"], jnp.asarray(codes, jnp.int32), labels),
                      np.float64)
  log_probs = logits - logits.max(-1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
  expected = -np.take_along_axis(log_probs, codes[..., None], -1).mean()
  np.testing.assert_allclose(nats, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["bits_per_code"], expected / math.log(2), rtol=1e-5)
  assert codes.shape == (8, method.length) and method.grid == (4, 4)


def test_cached_and_uncached_method_samples_agree(vq_run):
  config = _config(vq_run)
  method = load_method(config)
  batch = {"image": jnp.asarray(load_holdout(config, 2)), "label": jnp.zeros((2,), jnp.int32)}
  state = jax.jit(method.init)(jax.random.key(0), batch)
  labels = jnp.arange(5, dtype=jnp.int32)
  uncached = dataclasses.replace(method, cached=False)
  fn = jax.jit(lambda m, p, r: m.sample_codes(p, r, 5, labels), static_argnums=0)
  np.testing.assert_array_equal(fn(method, state.params, jax.random.key(3)),
                                fn(uncached, state.params, jax.random.key(3)))


def test_missing_or_wrong_first_stage_is_a_clear_error(tmp_path, vq_run):
  config = _config(None)
  with pytest.raises(ValueError, match="init_from.workdir"):
    load_method(config)
  config = _config(str(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match="run_record.json"):
    load_method(config)
  ae_dir = str(tmp_path / "ae")
  run_record.append_start(ae_dir, load_experiment("autoencoder/ae_digits", "smoke"), step=0)
  with pytest.raises(ValueError, match="'autoencoder.ae' run, not a VQ model"):
    load_method(_config(ae_dir))
  config = _config(vq_run)
  config.init_from.into = "params"
  with pytest.raises(ValueError, match="frozen/vqvae"):
    load_method(config)
  config = _config(vq_run)
  config.data.image_size = 16
  with pytest.raises(ValueError, match="image_size"):
    load_method(config)


def test_unconditional_prior_is_not_conditional(vq_run):
  config = _config(vq_run)
  config.model.num_classes = 0
  method = load_method(config)
  assert not isinstance(method, Conditional) and isinstance(method, Evaluates)
  assert isinstance(load_method(_config(vq_run)), Conditional)
  batch = {"image": jnp.asarray(load_holdout(config, 2))}
  state = jax.jit(method.init)(jax.random.key(0), batch)
  images = jax.jit(method.sample, static_argnums=2)(state, jax.random.key(1), 3)
  assert images.shape == (3, 8, 8, 1)
  assert np.all(np.abs(np.asarray(images)) <= 1.0)


@pytest.mark.slow  # ~35 s on 2 cores: the default suite stays under 20 minutes
def test_a_prior_over_vqgan_codes_loads_only_the_autoencoder(tmp_path):
  gan = load_experiment("first_stage/vqgan_digits", "smoke")
  gan.train.eval_every = 0
  gan_dir = str(tmp_path / "vqgan")
  jgen.run.main(gan, workdir=gan_dir)
  config = load_experiment("autoregressive/vq_transformer_digits", "vqgan,smoke")
  config.init_from.workdir = gan_dir
  state = jgen.run.main(config, workdir=str(tmp_path / "prior"))
  loaded, _ = init_from_lib.load(init_from_lib.InitFrom(gan_dir, subtree="autoencoder"))
  frozen = state.frozen[code_transformer.FROZEN]
  assert set(frozen) == {"encoder", "decoder", "codebook"}
  for a, b in zip(_leaves(frozen), _leaves(loaded), strict=True):
    np.testing.assert_array_equal(a, b)
  samples = jgen.run.main(config, workdir=str(tmp_path / "prior"), mode="sample")
  assert np.load(samples["npz"])["images"].shape[0] == config.sample.num

  config.init_from.subtree = ""
  with pytest.raises(ValueError, match="init_from.subtree='autoencoder'"):
    load_method(config)
