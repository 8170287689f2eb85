"""diffusion.stable_diffusion on the converted tiny pipeline: community files at sampling, the
fine-tuning step, and bad input. (Image parity with diffusers: tests/convert/test_pipeline.py.)"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.convert import lora as lora_files
from jgen.convert import pipeline, textual_inversion
from jgen.diffusion.stable_diffusion import make_method, split_prompts
from jgen.train import loop, run_record
from jgen.train.inference import restore_for_inference

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, "convert", "fixtures")
TOKENS_ONE = "a photo of a cat"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("sd") / "run")
  pipeline.convert(os.path.join(FIXTURES, "sd_pipeline"), path)
  return path


def _config(workdir, prompts=TOKENS_ONE):
  config = run_record.latest_config(workdir)
  config.sample.prompts = prompts
  config.sample.steps = 2
  return config


def _latents(method, state, prompt_tokens=None):
  x_t = jax.random.normal(jax.random.key(3), (1, *method.latent_shape))
  tokens = jnp.asarray(method.prompts[:1] if prompt_tokens is None else prompt_tokens)
  return np.asarray(method.sample_latents(state, jax.random.key(0), tokens,
                                          jnp.asarray(method.negative[None]), x_T=x_t))


def test_split_prompts():
  assert split_prompts("a cat, oil|a dog") == ("a cat, oil", "a dog")
  assert split_prompts(" ") == ()


def test_lora_file_equals_merging_it_into_the_weights(workdir, tmp_path):
  config = _config(workdir)
  method, _, state = restore_for_inference(config, workdir)
  rng = np.random.RandomState(0)
  name = "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2"
  text_name = "text_model.encoder.layers.0.self_attn.q_proj"
  modules = {"unet": {name: lora_files.LoraModule(rng.randn(2, 32).astype(np.float32),
                                                  rng.randn(8, 2).astype(np.float32), 4.0)},
             "text_encoder": {text_name: lora_files.LoraModule(
                 rng.randn(2, 16).astype(np.float32), rng.randn(16, 2).astype(np.float32), 2.0)}}
  path = str(tmp_path / "lora.safetensors")
  pytest.importorskip("safetensors")
  lora_files.save_peft(lora_files.LoraFile("peft", modules), path)
  config.lora.file, config.lora.scale = path, 0.5
  with_file = make_method(config)
  assert set(with_file.sample_frozen) == {"lora_unet", "lora_text"}
  got = _latents(with_file, state.replace(frozen={**state.frozen, **with_file.sample_frozen}))
  loaded = lora_files.read_lora(path)
  merged = state.replace(
      params={"unet": lora_files.merge_lora(state.params["unet"], loaded, 0.5)},
      frozen={**state.frozen, "text_encoder": lora_files.merge_lora(
          state.frozen["text_encoder"], loaded, 0.5, component="text_encoder")})
  want = _latents(method, merged)
  error = np.abs(got - want).max()
  change = np.abs(got - _latents(method, state)).max()  # what the file does to the samples
  assert error < 2e-5 and change > 100 * error


def test_textual_inversion_token_reaches_the_context(workdir, tmp_path):
  pytest.importorskip("safetensors")
  config = _config(workdir, "a photo of <cat-toy>")
  vectors = np.random.RandomState(1).randn(2, 16).astype(np.float32)
  path = str(tmp_path / "learned_embeds.safetensors")
  textual_inversion.export_embedding("<cat-toy>", vectors, path)
  config.textual_inversion.file = path
  method = make_method(config)
  _, _, state = restore_for_inference(config, workdir)
  frozen = {**state.frozen, **method.sample_frozen}
  vocab = method.text_encoder.vocab_size
  ids = list(method.prompts[0])
  assert vocab in ids and vocab + 1 in ids  # "<cat-toy>" written as its two vectors
  table = np.concatenate([np.asarray(state.frozen["text_encoder"]["token_embedding"]
                                     ["embedding"]), vectors])
  params = {**state.frozen["text_encoder"], "token_embedding": {"embedding": table}}
  want = method.text_encoder.clone(vocab_size=vocab + 2).apply(
      {"params": params}, jnp.asarray(method.prompts))
  got = method.context(frozen, jnp.asarray(method.prompts))
  assert np.abs(np.asarray(got) - np.asarray(want)).max() < 1e-6
  bad = str(tmp_path / "wide.safetensors")
  textual_inversion.export_embedding("<wide>", np.zeros((1, 24), np.float32), bad)
  config.textual_inversion.file = bad
  with pytest.raises(ValueError, match="width"):
    make_method(config)


@pytest.mark.slow  # about 45 s on 2 cores (compiling the full U-Net's gradient)
def test_fine_tuning_step_lowers_the_loss_on_one_batch(workdir):
  config = _config(workdir)
  config.optim.rules = ()
  config.optim.lr = 1e-3
  config.text.captions = "a photo of a cat"
  method = make_method(config)
  _, _, state = restore_for_inference(_config(workdir), workdir)
  state = state.replace(rules=()).with_rules(())
  images = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3), minval=-1, maxval=1)
  batch = {"image": images}
  step = jax.jit(method.train_step)
  losses = []
  for _ in range(3):
    state, metrics = step(state, batch, jax.random.key(7))  # the same noise and t each step
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0]


def test_empty_prompts_are_an_error(workdir):
  config = _config(workdir, "")
  with pytest.raises(ValueError, match="sample.prompts"):
    make_method(config)


def _captioned_folder(root, n=4, size=8):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  os.makedirs(root)
  rng = np.random.RandomState(0)
  for i in range(n):
    Image.fromarray(rng.randint(0, 256, (size, size, 3), np.uint8)).save(f"{root}/{i}.png")
    with open(f"{root}/{i}.txt", "w") as f:
      f.write("a photo of a cat" if i % 2 else "a dog on the beach")
  return root


@pytest.mark.slow  # about 50 s on 2 cores; the train step itself is tested above
def test_lora_fine_tuning_through_the_loop(workdir, tmp_path):
  from jgen.train.config import experiment_module  # pylint: disable=import-outside-toplevel
  experiments = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "experiments")
  config = experiment_module("sd/finetune", os.path.join(experiments, "x.py")).get_config(
      "kind=lora,arch=tiny")
  converted = run_record.latest_config(workdir)
  for block in ("model", "text", "autoencoder", "diffusion"):
    for key, value in converted[block].items():
      with config[block].ignore_type():
        config[block][key] = value
  config.data.image_size = converted.data.image_size
  config.data.source = "captioned:" + _captioned_folder(str(tmp_path / "images"))
  config.init_from.workdir = workdir
  config.train.num_steps = 2
  config.train.checkpoint_every = 2
  config.train.async_checkpoints = False
  config.sample.num = 2
  config.sample.batch_size = 2
  run = str(tmp_path / "lora_run")
  state = loop.train(config, run)
  base = restore_for_inference(_config(workdir), workdir)[2]
  lora = jax.tree.leaves(state.params["lora"])
  assert lora and any(float(jnp.abs(x).max()) > 0 for x in lora)  # B moved off zero
  for a, b in zip(jax.tree.leaves(state.params["unet"]), jax.tree.leaves(base.params["unet"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the base stays frozen
  assert os.path.isdir(os.path.join(run, "adapters"))


def test_textual_inversion_training_starts_at_the_init_word_and_trains_only_it(workdir, tmp_path):
  config = _config(workdir, "a photo of <t>")
  config.textual_inversion.train_token = "<t>"
  config.textual_inversion.init_token = "cat"
  config.text.captions = "a photo of a {}|a {} on the beach"
  config.optim.rules = (("token_offsets", 1.0), (".*", "frozen"))
  config.optim.lr = 1e-2
  method = make_method(config)
  assert method.train_init_ids and len(method.captions) == 2
  _, _, base = restore_for_inference(_config(workdir), workdir)
  params = {**base.params, "token_offsets": jnp.zeros((1, 16))}
  state = base.replace(params=params).with_rules(config.optim.rules)
  tokens = jnp.asarray(method.prompts)
  plain = make_method(_config(workdir, "a photo of cat"))
  np.testing.assert_allclose(np.asarray(method.context(state.frozen, tokens, state.params)),
                             np.asarray(plain.context(state.frozen, jnp.asarray(plain.prompts))),
                             atol=1e-6)  # "<t>" starts as "cat"
  batch = {"image": jax.random.uniform(jax.random.key(0), (2, 8, 8, 3), minval=-1, maxval=1)}
  new, _ = jax.jit(method.train_step)(state, batch, jax.random.key(1))
  assert float(jnp.abs(new.params["token_offsets"]).max()) > 0
  for a, b in zip(jax.tree.leaves(new.params["unet"]), jax.tree.leaves(state.params["unet"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
