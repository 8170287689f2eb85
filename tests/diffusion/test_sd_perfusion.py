"""diffusion.sd_perfusion (experiments/sd/finetune.py:kind=perfusion) on the converted tiny
pipeline: the edit at zero offsets, the rules, C^-1, the train step, and a loop run with its
concept file and sampling."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen import errors
from jgen.convert import pipeline
from jgen.diffusion import perfusion as perf
from jgen.diffusion import sd_perfusion
from jgen.cli import perfusion as perfusion_cli
from jgen.train import run_record
from jgen.train.config import experiment_module
from jgen.train.inference import restore_for_inference

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
FIXTURES = os.path.join(ROOT, "tests", "convert", "fixtures")
CAPTIONS = "a photo of a {}|a {} on the beach"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("sd_perfusion") / "converted")
  pipeline.convert(os.path.join(FIXTURES, "sd_pipeline"), path)
  return path


def _config(converted):
  """kind=perfusion,arch=tiny on the converted run's architecture and tokenizer."""
  config = experiment_module("sd/finetune", os.path.join(ROOT, "experiments", "x.py")).get_config(
      "kind=perfusion,arch=tiny")
  base = run_record.latest_config(converted)
  for block in ("model", "text", "autoencoder", "diffusion"):
    for key, value in base[block].items():
      with config[block].ignore_type():
        config[block][key] = value
  config.data.image_size = base.data.image_size
  config.init_from.workdir = converted
  config.text.captions = CAPTIONS
  config.textual_inversion.train_token = "<t>"
  config.textual_inversion.init_token = "cat"
  config.sample.prompts = "a photo of <t>|a dog"
  config.perfusion.corpus_size = 8
  return config


def _base(converted):
  config = run_record.latest_config(converted)
  config.sample.steps = 2
  return restore_for_inference(config, converted)[2]


def _with_base(method, base):
  """The perfusion state of `method` on the converted networks: its new parameters (zero) and
  C^-1 (`init`'s shapes; a real `init` compiles the autoencoder, half a minute on 2 cores)."""
  shapes = jax.eval_shape(method.init, jax.random.key(0), {})
  new = {k: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), v)
         for k, v in shapes.params.items() if k != "unet"}
  assert set(new) == {"token_offsets", "perfusion"} and set(shapes.frozen) == {
      "text_encoder", "autoencoder", "perfusion"}
  c_inv = method.estimate_c_inv(base.frozen["text_encoder"])
  return base.replace(params={**base.params, **new},
                      frozen={**base.frozen, "perfusion": {"c_inv": c_inv}})


def test_zero_offsets_and_a_far_gate_leave_the_unet_unchanged(converted):
  method = sd_perfusion.make_method(_config(converted))
  state = _with_base(method, _base(converted))
  arrays = method.edit_arrays(state.params, state.frozen)
  np.testing.assert_allclose(arrays["i_star"], arrays["i_super"], atol=1e-6)  # row = "cat"'s
  i_star, c_inv = arrays["i_star"], arrays["c_inv"]
  x = jax.random.normal(jax.random.key(1), (2, 5, 16)) * jnp.linalg.norm(i_star)
  x = x - perf.rank_one_similarity(x, i_star, c_inv) @ i_star   # x^T C^-1 i* = 0
  sd = method.sd
  z = jax.random.normal(jax.random.key(2), (2, *sd.latent_shape))
  t = jnp.array([10, 500])

  def unet(context):   # a new function each call: traced (and edited) under its context
    return jax.jit(lambda c: sd.unet.apply({"params": state.params["unet"]}, z, t,
                                           {"context": c}, train=False))(context)
  base = unet(x)
  assert np.isfinite(np.asarray(base)).all()
  with perf.perfusion_edit(arrays, perf.Gate(5.0, 0.1)):   # g = sigmoid(-50): off
    edited = unet(x)
  np.testing.assert_allclose(edited, base, atol=1e-6)
  moved = {**arrays, "values": jax.tree.map(jnp.ones_like, arrays["values"])}
  with perf.perfusion_edit(moved, perf.Gate(5.0, 0.1)):    # offsets, but the gate is shut
    edited = unet(x)
  np.testing.assert_allclose(edited, base, atol=1e-6)
  hit = x.at[:, 2].set(i_star[0])   # the concept's encoding itself opens the gate
  with perf.perfusion_edit(moved, method.train_gate):
    edited = unet(hit)
  assert float(jnp.abs(edited - unet(hit)).max()) > 1e-3


def test_rules_and_token_are_checked(converted):
  config = _config(converted)
  config.optim.rules = (("token_offsets", 1.0), (".*", "frozen"))
  with pytest.raises(errors.ConfigError, match=r"token_offsets.*perfusion/\.\*"):
    sd_perfusion.make_method(config)
  config = _config(converted)
  config.textual_inversion.num_vectors = 2
  with pytest.raises(errors.ConfigError, match="num_vectors=1"):
    sd_perfusion.make_method(config)
  config = _config(converted)
  config.text.captions = "a photo of a {}|a photo"
  with pytest.raises(errors.ConfigError, match="caption template"):
    sd_perfusion.make_method(config)


def test_train_step_moves_only_the_token_and_value_offsets(converted):
  config = _config(converted)
  method = sd_perfusion.make_method(config)
  state = _with_base(method, _base(converted)).with_rules(config.optim.rules)
  batch = {"image": jax.random.uniform(jax.random.key(0), (2, 8, 8, 3), minval=-1, maxval=1)}
  new, metrics = jax.jit(method.train_step)(state, batch, jax.random.key(1))
  assert np.isfinite(float(metrics["loss"]))
  assert float(jnp.abs(new.params["token_offsets"]).max()) > 0
  values = jax.tree.leaves(new.params["perfusion"])
  assert len(values) == 4 and all(float(jnp.abs(v).max()) > 0 for v in values)
  for a, b in zip(jax.tree.leaves(new.params["unet"]), jax.tree.leaves(state.params["unet"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _folder(root, n=4, size=8):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  os.makedirs(root)
  rng = np.random.RandomState(0)
  for i in range(n):
    Image.fromarray(rng.randint(0, 256, (size, size, 3), np.uint8)).save(f"{root}/{i}.png")
  return root


def _c_inv(method, frozen):
  """C^-1 recomputed from the corpus' encodings, one prompt at a time."""
  context = np.concatenate([np.asarray(method.sd.context(frozen, jnp.asarray(row[None])))
                            for row in method.corpus])
  return np.linalg.inv(perf.input_covariance(context))


@pytest.mark.slow  # about 45 s on 2 busy cores (prepare, 2 train steps, 4 samplers)
def test_loop_run_concept_file_and_sampling(converted, tmp_path):
  from jgen import run  # pylint: disable=import-outside-toplevel
  config = _config(converted)
  config.data.source = "folder:" + _folder(str(tmp_path / "images"))
  config.data.batch_size = 2
  config.train.num_steps = 2
  config.train.checkpoint_every = 2
  config.train.async_checkpoints = False
  config.sample.num = 2
  config.sample.batch_size = 2
  workdir = str(tmp_path / "run")
  state = run.main(config, workdir=workdir, compilation_cache=False)
  base = _base(converted)
  method = sd_perfusion.make_method(config)

  # only the token offset and the value offsets train
  assert set(state.params) == {"unet", "token_offsets", "perfusion"}
  assert float(jnp.abs(state.params["token_offsets"]).max()) > 0
  assert all(float(jnp.abs(v).max()) > 0 for v in jax.tree.leaves(state.params["perfusion"]))
  for name, tree in (("unet", base.params["unet"]),):
    for a, b in zip(jax.tree.leaves(state.params[name]), jax.tree.leaves(tree)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for name in ("text_encoder", "autoencoder"):
    for a, b in zip(jax.tree.leaves(state.frozen[name]), jax.tree.leaves(base.frozen[name])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_allclose(state.frozen["perfusion"]["c_inv"],
                             _c_inv(method, base.frozen), rtol=1e-3, atol=1e-3)

  # the concept file round-trips
  path = str(tmp_path / "t.safetensors")
  concept = perfusion_cli.export(workdir, path)
  want = method.concept(jax.device_get(state.params), jax.device_get(state.frozen))
  loaded = perf.load_concept(path)
  assert (loaded.word, loaded.superordinate, loaded.base) == ("<t>", "cat", want.base)
  for got in (concept, loaded):
    for key in ("embedding", "i_star", "i_super"):
      np.testing.assert_allclose(getattr(got, key), getattr(want, key), atol=1e-6)
    assert set(got.values) == set(want.values) == set(perf.value_layers(base.params["unet"]))
    for key, value in want.values.items():
      np.testing.assert_allclose(got.values[key], value, atol=1e-6)

  # sampling with the file (renamed: a second word) draws what the run's own concept draws
  renamed = str(tmp_path / "u.safetensors")
  perf.save_concept(renamed, dataclasses.replace(loaded, word="<u>"))
  with_file = _config(converted)
  with_file.perfusion.concepts = renamed
  with_file.sample.prompts = "a photo of <u>"
  files = sd_perfusion.make_method(with_file)
  assert files.sample_frozen["token_rows"].shape == (1, 16)
  own = sd_perfusion.make_method(_config(converted))
  file_state = state.replace(frozen={**state.frozen, **files.sample_frozen})
  labels = {"label": jnp.zeros((2,), jnp.int32)}
  got = np.asarray(jax.jit(files.sample_conditional, static_argnums=3)(
      file_state, jax.random.key(5), labels, 2))
  ref = np.asarray(jax.jit(own.sample_conditional, static_argnums=3)(
      state, jax.random.key(5), labels, 2))
  assert got.shape == (2, 8, 8, 3) and np.isfinite(got).all()
  error = np.abs(got - ref).max()
  plain = np.asarray(jax.jit(own.sd.sample_conditional, static_argnums=3)(
      state, jax.random.key(5), labels, 2))   # the same row without the edit
  assert error < 1e-4 and np.abs(plain - ref).max() > 10 * error
  with pytest.raises(errors.ConfigError, match="sampling options"):
    files.prepare(workdir)
  clash = _config(converted)
  clash.perfusion.concepts = path
  with pytest.raises(errors.ConfigError, match="own word '<t>'"):
    sd_perfusion.make_method(clash)
  with_file.sample.num = 2
  paths = run.main(with_file, workdir=workdir, mode="sample", compilation_cache=False)
  assert "perfusion_1files_b0.7_t0.15" in paths["npz"]
  assert np.load(paths["npz"])["images"].shape == (2, 8, 8, 3)
