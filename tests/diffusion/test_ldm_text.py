"""Text-conditioned latent diffusion through the loop on a frozen vqgan_digits:smoke run: the
caption table and its draws, train + resume + eval + prompt sampling, samples equal to a
hand-composed guided sampler on the empty prompt, unknown prompt words rejected before any
compile, and a text encoder frozen from another run that never changes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen.diffusion import ldm
from jgen.diffusion.samplers import ddim_sample
from jgen.nn import text
from jgen.train import init_from as init_from_lib
from jgen.train import load_method
from tests.conftest import checkpoint_steps, load_experiment


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, fs_run):
  """(config, workdir, final state) of ldm_text_digits:smoke: 2 steps, then resumed to 4."""
  workdir = str(tmp_path_factory.mktemp("ldm_text"))
  config = _config(fs_run)
  config.train.num_steps = 2
  jgen.run.main(config, workdir=workdir)
  assert checkpoint_steps(workdir) == [2]
  config = _config(fs_run)
  state = jgen.run.main(config, workdir=workdir)
  return config, workdir, state


def _config(fs_workdir):
  config = load_experiment("ldm/text_digits", "smoke")
  config.init_from.workdir = fs_workdir
  return config


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_caption_table_and_draws(fs_run):
  method = load_method(_config(fs_run))
  assert isinstance(method, ldm.TextLatentDiffusion)
  t = len(text.TEMPLATES)
  assert method.captions.shape == (10 * t + 1, method.tokenizer.max_len)
  decoded = method.tokenizer.decode(method.captions)
  assert decoded[7 * t:8 * t] == ["a handwritten seven", "the digit 7", "7", "seven",
                                  "a picture of a seven"]
  assert decoded[8 * t + 4] == "a picture of an eight" and decoded[-1] == ""
  # Draws: each example gets one of its own label's T captions, uniformly (chi-square-free
  # check: 20,000 draws, every template within 5 sigma of 1/T); the empty prompt at rate p.
  labels = jnp.asarray(np.arange(20000) % 10, jnp.int32)
  draw = jax.jit(method.caption_tokens, static_argnums=2)
  tokens = np.asarray(draw(labels, jax.random.key(0), 0.0))
  row = {tuple(r): i for i, r in enumerate(method.captions.tolist())}
  index = np.asarray([row[tuple(r)] for r in tokens.tolist()])
  np.testing.assert_array_equal(index // t, np.asarray(labels))
  share = np.bincount(index % t, minlength=t) / len(index)
  sigma = np.sqrt((1 / t) * (1 - 1 / t) / len(index))
  assert np.all(np.abs(share - 1 / t) < 5 * sigma)
  dropped = np.asarray(draw(labels, jax.random.key(1), 0.3))
  empty = np.all(dropped == method.captions[-1], axis=1)
  assert abs(empty.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / len(empty))


@pytest.mark.slow  # the text run fixture: two loop runs, ~2 min on 2 cores
def test_train_resume_eval_and_prompt_sampling(fs_run, text_run):
  config, workdir, state = text_run
  assert int(state.step) == 4
  assert set(state.params) == {"unet", ldm.TEXT_FROZEN}
  assert set(state.frozen) == {ldm.FROZEN}
  assert any("cross_attn" in k for k in state.params["unet"]["params"])
  loaded, _ = init_from_lib.load(init_from_lib.InitFrom(fs_run, subtree="autoencoder"))
  for a, b in zip(_leaves(state.frozen[ldm.FROZEN]), _leaves(loaded), strict=True):
    np.testing.assert_array_equal(a, b)

  result = jgen.run.main(config, workdir=workdir, mode="eval")
  assert np.isfinite(result["loss"]) and 0.0 < result["loss"] < 10.0

  config = _config(fs_run)
  config.sample.prompts = "a handwritten three,the digit 7,seven"
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  saved = np.load(paths["npz"])
  assert saved["images"].shape == (config.sample.num, 8, 8, 1)
  np.testing.assert_array_equal(saved["labels"], np.arange(config.sample.num) % 3)
  assert "ldm_text_ddim5" in paths["npz"] and "_w3_prompts3-" in paths["npz"]


def test_unknown_prompt_words_fail_before_compiling(fs_run):
  config = _config(fs_run)
  config.sample.prompts = "a handwritten three,a hnadwritten four"
  with pytest.raises(ValueError, match=r"\['hnadwritten'\].*these 64 words.*handwritten"):
    load_method(config)
  config = _config(fs_run)
  config.ldm.conditioning = "speech"
  with pytest.raises(ValueError, match="ldm.conditioning"):
    load_method(config)


@pytest.mark.slow  # the text run fixture: two loop runs, ~2 min on 2 cores
def test_samples_are_cfg_against_the_empty_prompt(fs_run, text_run):
  """The method's samples equal DDIM on eps_u + w (eps_c - eps_u) composed here by hand from
  the U-Net and encoder applies, eps_u on the empty prompt, decoded by the frozen decoder."""
  _, _, state = text_run
  config = _config(fs_run)
  config.sample.prompts = "a handwritten three,seven"
  method = load_method(config)
  rng = jax.random.key(3)
  labels = jnp.asarray([0, 1, 1, 0], jnp.int32)
  images = jax.jit(lambda s, r, c: method.sample_conditional(s, r, c, 4))(
      state, rng, {"label": labels})
  tokens = method.tokenizer.encode(["a handwritten three", "seven", "seven",
                                    "a handwritten three"])
  by_tokens = jax.jit(lambda s, r, c: method.sample_conditional(s, r, c, 4))(
      state, rng, {"tokens": jnp.asarray(tokens)})
  np.testing.assert_array_equal(np.asarray(images), np.asarray(by_tokens))

  ema = state.ema_params
  net = method.text_encoder.network
  ids = jnp.asarray(tokens)
  empty = jnp.asarray(method.tokenizer.encode([""] * 4))
  ctx_c = net.apply(ema[ldm.TEXT_FROZEN], ids, ids != 0)
  ctx_u = net.apply(ema[ldm.TEXT_FROZEN], empty, empty != 0)
  unet, w = method.ddpm.model, config.sample.guidance_scale

  def eps_fn(x, t):
    t = jnp.broadcast_to(t, (x.shape[0],))
    e_c = unet.apply(ema["unet"], x, t, {"context": ctx_c}, train=False)
    e_u = unet.apply(ema["unet"], x, t, {"context": ctx_u}, train=False)
    return e_u + w * (e_c - e_u)
  z = jax.jit(lambda r: ddim_sample(eps_fn, method.ddpm.schedule, r,
                                    (4, *method.latent_shape), steps=config.sample.steps,
                                    clip_denoised=False))(rng)
  expected = method.decode_latents(state.frozen, state.model_state, z)
  np.testing.assert_allclose(np.asarray(images), np.asarray(expected), atol=1e-4)


@pytest.mark.slow  # the text run fixture: two loop runs, ~2 min on 2 cores
def test_frozen_text_encoder_from_another_run_never_changes(tmp_path, fs_run, text_run):
  _, text_workdir, _ = text_run
  config = _config(fs_run)
  config.init_from.text_encoder.workdir = text_workdir
  config.train.num_steps = 2
  config.train.eval_every = 0
  method = load_method(config)
  assert method.encoder_frozen
  state = jgen.run.main(config, workdir=str(tmp_path))
  assert set(state.params) == {"unet"}
  assert set(state.frozen) == {ldm.FROZEN, ldm.TEXT_FROZEN}
  assert ldm.TEXT_FROZEN not in str(jax.tree_util.tree_structure(state.emas))
  loaded, _ = init_from_lib.load(init_from_lib.InitFrom(text_workdir, subtree="text_encoder"))
  for a, b in zip(_leaves(state.frozen[ldm.TEXT_FROZEN]), _leaves(loaded), strict=True):
    np.testing.assert_array_equal(a, b)
