"""Latent diffusion (stage 2) through the loop on a frozen vqgan_digits:smoke run: the scale
factor is 1/std of the first batch's latents (NumPy), recorded and reused on resume and at
sampling; the frozen first stage never changes; samples are the frozen decoder's decodings of
the DDPM's latents; clear errors for a missing or wrong first stage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen.autoencoder.common import load_holdout
from jgen.diffusion import ldm
from jgen.train import init_from as init_from_lib
from jgen.train import load_method
from jgen.train import inference, inputs
from tests.conftest import checkpoint_steps, load_experiment


@pytest.fixture(scope="module")
def ldm_run(tmp_path_factory, fs_run):
  """(config, workdir, final state, the factor recorded at step 2) of the :smoke LDM trained
  on `fs_run`: 2 steps, then resumed to 4 with any re-measurement of the factor giving 123."""
  workdir = str(tmp_path_factory.mktemp("ldm"))
  config = _config(fs_run)
  config.train.num_steps = 2
  first = jgen.run.main(config, workdir=workdir)
  assert checkpoint_steps(workdir) == [2]
  recorded = np.asarray(first.model_state["scale_factor"])
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(ldm, "measure_scale_factor", lambda z: jnp.asarray(123.0, jnp.float32))
    config = _config(fs_run)
    state = jgen.run.main(config, workdir=workdir)
    assert int(state.step) == config.train.num_steps == 4
    _, _, restored = inference.restore_for_inference(config, workdir)
  return config, workdir, state, recorded, restored


def _config(fs_workdir):
  config = load_experiment("ldm/digits", "smoke")
  config.init_from.workdir = fs_workdir
  return config


def _loaded(fs_workdir):
  tree, _ = init_from_lib.load(init_from_lib.InitFrom(fs_workdir, subtree="autoencoder"))
  return tree


def _numpy_latents(method, ae, images):
  """VQ latents by hand: the encoder's outputs snapped to their nearest code (NumPy)."""
  h = np.asarray(method.first_stage.encoder.apply({"params": ae["encoder"]}, images,
                                                  train=False), np.float64)
  book = np.asarray(ae["codebook"], np.float64)
  flat = h.reshape(-1, book.shape[1])
  nearest = np.argmin(((flat[:, None, :] - book[None]) ** 2).sum(-1), axis=-1)
  return book[nearest].reshape(h.shape)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_train_eval_sample_through_the_loop(fs_run, ldm_run):
  config, workdir, state, _, _ = ldm_run
  assert int(state.step) == config.train.num_steps
  # Stage 2 never changes stage 1: the frozen leaves are the checkpoint's, bitwise.
  loaded = _loaded(fs_run)
  for a, b in zip(_leaves(state.frozen[ldm.FROZEN]), _leaves(loaded), strict=True):
    np.testing.assert_array_equal(a, b)
  # Only the U-Net and the label tokens train (no first-stage leaf in params, EMAs, opt).
  params = state.params["params"]
  assert set(params) == {"label_tokens", "unet"}
  assert params["label_tokens"]["embedding"].shape == (11, 4 * config.ldm.context_dim)
  assert any("cross_attn" in k for k in params["unet"])
  assert "encoder" not in str(jax.tree_util.tree_structure(state.emas))

  # The scale factor is 1/std of the loop's first batch's latents (NumPy).
  method = load_method(config)
  source = inputs.load_data(config, split=config.data.split)
  first = inputs.make_dataset(config, source, seed=config.seed)[0]
  z = _numpy_latents(method, loaded, jnp.asarray(first["image"]))
  np.testing.assert_allclose(float(state.model_state["scale_factor"]), 1.0 / np.std(z),
                             rtol=1e-5)

  result = jgen.run.main(config, workdir=workdir, mode="eval")
  assert np.isfinite(result["loss"]) and 0.0 < result["loss"] < 10.0

  config.sample.labels = "3,7"
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  saved = np.load(paths["npz"])
  assert saved["images"].shape == (config.sample.num, 8, 8, 1)
  np.testing.assert_array_equal(saved["labels"], np.resize([3, 7], config.sample.num))
  assert "ldm_ddim5" in paths["npz"] and "_w3" in paths["npz"]


def test_samples_are_the_frozen_decoder_of_the_ddpm_latents(fs_run, ldm_run):
  config, _, state, _, _ = ldm_run
  method = load_method(config)
  labels = {"label": jnp.asarray([0, 3, 7, 9], jnp.int32)}
  rng = jax.random.key(5)
  images = jax.jit(lambda s, r, c: method.sample_conditional(s, r, c, 4))(state, rng, labels)
  # Independently: the DDPM's latents, divided by the recorded factor, snapped to the nearest
  # code of the checkpoint's codebook (NumPy), decoded with the checkpoint's decoder.
  z = np.asarray(jax.jit(lambda s, r, c: method.ddpm.sample_conditional(s, r, c, 4))(
      state, rng, labels), np.float64)
  loaded = _loaded(fs_run)
  z = z / float(state.model_state["scale_factor"])
  book = np.asarray(loaded["codebook"], np.float64)
  flat = z.reshape(-1, book.shape[1])
  codes = book[np.argmin(((flat[:, None, :] - book[None]) ** 2).sum(-1), axis=-1)]
  decoded = method.first_stage.decoder.apply(
      {"params": loaded["decoder"]}, jnp.asarray(codes.reshape(z.shape), jnp.float32),
      train=False)
  np.testing.assert_allclose(np.asarray(images), np.clip(np.asarray(decoded), -1, 1),
                             atol=1e-5)


def test_init_measures_the_factor_unless_it_is_fixed(fs_run, monkeypatch):
  """`init` records what measure_scale_factor gives (patched to 123, so the resume test below
  can fail), or `ldm.scale_factor` without measuring; never a parameter. (That the measured
  value is 1/std of the first batch's latents is checked against NumPy above.)"""
  monkeypatch.setattr(ldm, "measure_scale_factor", lambda z: jnp.asarray(123.0, jnp.float32))
  config = _config(fs_run)
  x = jnp.asarray(load_holdout(config, 8))
  batch = {"image": x, "label": jnp.arange(8, dtype=jnp.int32)}
  method = load_method(config)
  params = jax.eval_shape(method.init, jax.random.key(0), batch).params
  assert "scale_factor" not in str(jax.tree_util.tree_structure(params))
  # Only model_state is returned, so XLA drops the U-Net's initialization (seconds, not 15 s).
  measured = jax.jit(lambda r, b: method.init(r, b).model_state)(jax.random.key(0), batch)
  assert float(measured["scale_factor"]) == 123.0
  config.ldm.scale_factor = 0.5
  fixed = load_method(config)
  assert float(jax.jit(lambda r, b: fixed.init(r, b).model_state)(
      jax.random.key(0), batch)["scale_factor"]) == 0.5


def test_resume_and_sampling_reuse_the_recorded_factor(ldm_run):
  config, _, resumed, recorded, restored = ldm_run
  # The fixture resumed from step 2 and restored for sampling with measure_scale_factor
  # patched to give 123: both kept the factor recorded at the first start, bitwise.
  assert float(recorded) != 123.0
  np.testing.assert_array_equal(np.asarray(resumed.model_state["scale_factor"]), recorded)
  np.testing.assert_array_equal(np.asarray(restored.model_state["scale_factor"]), recorded)
  assert int(restored.step) == 4


def test_missing_or_wrong_first_stage_is_a_clear_error(tmp_path, fs_run, ldm_run):
  with pytest.raises(ValueError, match="init_from.workdir is empty"):
    load_method(_config(""))
  with pytest.raises(ValueError, match="no run_record|run record|not the work directory"):
    load_method(_config(str(tmp_path)))
  ldm_workdir = ldm_run[1]
  with pytest.raises(ValueError, match="not a latent-diffusion first stage"):
    load_method(_config(ldm_workdir))
  config = _config(fs_run)
  config.init_from.subtree = ""
  with pytest.raises(ValueError, match="init_from.subtree"):
    load_method(config)
  config = _config(fs_run)
  config.data.image_size = 16
  with pytest.raises(ValueError, match="data.image_size"):
    load_method(config)


@pytest.mark.slow  # a klae_digits:smoke run and an LDM run on it: ~2 min on 2 cores
def test_kl_first_stage_latents_are_the_posterior_mean(tmp_path):
  """On a KL autoencoder the latents are the posterior mean (no snapping), scaled by the
  recorded factor, and samples are the decoder's clipped decodings of z / s (NumPy checks)."""
  kl_dir = str(tmp_path / "klae")
  kl = load_experiment("first_stage/klae_digits", "smoke")
  kl.train.eval_every = 0
  jgen.run.main(kl, workdir=kl_dir)
  config = _config(kl_dir)
  state = jgen.run.main(config, workdir=str(tmp_path / "ldm"))
  method = load_method(config)
  assert method.first_stage.bottleneck == "kl"
  loaded = _loaded(kl_dir)
  for a, b in zip(_leaves(state.frozen[ldm.FROZEN]), _leaves(loaded), strict=True):
    np.testing.assert_array_equal(a, b)
  x = jnp.asarray(load_holdout(config, 4))
  moments = np.asarray(method.first_stage.encoder.apply({"params": loaded["encoder"]}, x,
                                                        train=False))
  mean = moments[..., :moments.shape[-1] // 2]  # [mean, log-variance] halves
  scale = float(state.model_state["scale_factor"])
  np.testing.assert_allclose(np.asarray(method.latents(state.frozen, state.model_state, x)),
                             scale * mean, rtol=1e-5, atol=1e-5)
  labels = {"label": jnp.asarray([0, 3, 7, 9], jnp.int32)}
  rng = jax.random.key(2)
  images = jax.jit(lambda s, r, c: method.sample_conditional(s, r, c, 4))(state, rng, labels)
  z = jax.jit(lambda s, r, c: method.ddpm.sample_conditional(s, r, c, 4))(state, rng, labels)
  decoded = method.first_stage.decoder.apply({"params": loaded["decoder"]}, z / scale,
                                             train=False)
  np.testing.assert_allclose(np.asarray(images), np.clip(np.asarray(decoded), -1, 1),
                             atol=1e-5)
