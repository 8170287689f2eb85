"""Perfusion (`jgen.diffusion.perfusion`): the rank-one edit and its gate against their closed
forms (NumPy, float64), concept files, the base untouched without a concept (bit for bit), the
edit on a tiny Stable-Diffusion-layout U-Net, and a smoke run of the method through the loop.

Tolerances: the edit is float32 matrix products of width <= 8 on inputs of norm ~1, compared
with float64 NumPy: rtol/atol 1e-5.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen import errors
from jgen.convert.unet import unet_settings
from jgen.diffusion import perfusion as perf
from jgen.nn.unet import UNet
from jgen.train.rules import flat
from jgen.train import init_from as init_from_lib
from tests.conftest import load_experiment
from jgen.train import load_method

D, C = 6, 5


class _Projections(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(C, name="k")(x), nn.Dense(C, name="v")(x)


class _Toy(nn.Module):
  """Key and value projections at a cross-attention path, and a self-attention one beside."""

  @nn.compact
  def __call__(self, x):
    k, v = _Projections(name="blk_cross_attn")(x)
    k_self, _ = _Projections(name="blk_attn")(x)
    return k, v, k_self


def _setup(seed=0, m=1):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(D, D))
  cov = a @ a.T / D + 0.1 * np.eye(D)
  c_inv = np.linalg.inv(cov)
  i_star = rng.normal(size=(m, D))
  i_super = rng.normal(size=(m, D))
  delta = rng.normal(size=(m, C))
  toy = _Toy()
  params = toy.init(jax.random.key(seed), jnp.zeros((1, D)))
  arrays = {"i_star": i_star, "i_super": i_super, "c_inv": c_inv,
            "values": {"blk_cross_attn": delta}}
  return toy, params, arrays, rng


def _dense(params, name):
  p = params["params"]["blk_cross_attn"][name]
  return np.asarray(p["kernel"], np.float64), np.asarray(p["bias"], np.float64)


def test_rank_one_edit_matches_its_closed_form():
  toy, params, arrays, rng = _setup()
  i_star, i_super, c_inv = arrays["i_star"][0], arrays["i_super"][0], arrays["c_inv"]
  delta = arrays["values"]["blk_cross_attn"][0]
  x = rng.normal(size=(7, D))
  ortho = x - np.outer(x @ c_inv @ i_star / (i_star @ c_inv @ i_star), i_star)  # C^-1-orthogonal
  inputs = np.concatenate([i_star[None], x, ortho]).astype(np.float32)
  with perf.perfusion_edit(arrays, perf.Gate(temperature=0.0)):
    k, v, k_self = toy.apply(params, inputs)
  base_k, base_v, base_self = toy.apply(params, inputs)
  for name, got, target, base in (("k", k, 0.0, base_k), ("v", v, delta, base_v)):
    w, b = _dense(params, name)
    o_star = i_super @ w + target            # the target of the linear part
    # ROME: W' = W + (o* - W i*) i*^T C^-1 / (i*^T C^-1 i*)   (row-vector form x W + b)
    w_edit = w + np.outer(c_inv @ i_star, o_star - i_star @ w) / (i_star @ c_inv @ i_star)
    np.testing.assert_allclose(got, inputs.astype(np.float64) @ w_edit + b, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(got[0], o_star + b, rtol=1e-5, atol=1e-5)   # i* -> o*
    np.testing.assert_allclose(got[8:], base[8:], rtol=1e-5, atol=1e-5)    # orthogonal: kept
  np.testing.assert_array_equal(k_self, base_self)   # self-attention is not a target


def test_the_gate_at_the_concept_and_elsewhere():
  toy, params, arrays, rng = _setup(1)
  i_star, i_super, c_inv = arrays["i_star"][0], arrays["i_super"][0], arrays["c_inv"]
  delta = arrays["values"]["blk_cross_attn"][0]
  g = perf.Gate(bias=0.7, temperature=0.15)
  alpha = perf.rank_one_similarity(jnp.asarray(i_star[None], jnp.float32),
                                   jnp.asarray(arrays["i_star"], jnp.float32),
                                   jnp.asarray(c_inv, jnp.float32))
  np.testing.assert_allclose(alpha, [[1.0]], rtol=1e-5)
  want = 1.0 / (1.0 + np.exp(-(1.0 - 0.7) / 0.15))
  np.testing.assert_allclose(perf.gate(alpha, g), [[want]], rtol=1e-6)
  x = rng.normal(size=(3, D))
  inputs = np.concatenate([i_star[None], x]).astype(np.float32)
  with perf.perfusion_edit(arrays, g):
    k, v, _ = toy.apply(params, inputs)
  xs = inputs.astype(np.float64)
  a = xs @ c_inv @ i_star / (i_star @ c_inv @ i_star)
  gx = 1.0 / (1.0 + np.exp(-(a - 0.7) / 0.15))
  moved = xs - np.outer(a, i_star) + np.outer(gx, i_super)   # W (x - alpha i*) + g o*
  wk, bk = _dense(params, "k")
  wv, bv = _dense(params, "v")
  np.testing.assert_allclose(k, moved @ wk + bk, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(v, moved @ wv + bv + np.outer(gx, delta), rtol=1e-5, atol=1e-5)
  with pytest.raises(errors.ConfigError, match="temperature"):
    perf.Gate(temperature=-1.0)


def test_two_concepts_each_map_to_their_targets():
  toy, params, arrays, rng = _setup(2, m=2)
  c_inv = arrays["c_inv"]
  i1 = arrays["i_star"][0]
  i2 = arrays["i_star"][1]  # make the second C^-1-orthogonal to the first
  i2 = i2 - (i2 @ c_inv @ i1) / (i1 @ c_inv @ i1) * i1
  arrays["i_star"] = np.stack([i1, i2])
  with perf.perfusion_edit(arrays, perf.Gate(temperature=0.0)):
    k, v, _ = toy.apply(params, arrays["i_star"].astype(np.float32))
  wk, bk = _dense(params, "k")
  wv, bv = _dense(params, "v")
  np.testing.assert_allclose(k, arrays["i_super"] @ wk + bk, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(v, arrays["i_super"] @ wv + bv + arrays["values"]["blk_cross_attn"],
                             rtol=1e-5, atol=1e-5)


def test_concept_file_round_trips(tmp_path):
  rng = np.random.default_rng(0)
  concept = perf.Concept(word="sks", superordinate="seven",
                         embedding=rng.normal(size=8).astype(np.float32),
                         i_star=rng.normal(size=4).astype(np.float32),
                         i_super=rng.normal(size=4).astype(np.float32),
                         values={"down_1_block_0_cross_attn": rng.normal(size=6).astype(
                             np.float32), "a/b/attn2": rng.normal(size=3).astype(np.float32)},
                         base="0123456789abcdef")
  path = str(tmp_path / "c" / "sks.safetensors")
  perf.save_concept(path, perf.Concept(**{**concept.__dict__, "word": "old"}))
  perf.save_concept(path, concept)   # replaces the older file
  back = perf.load_concept(path)
  assert (back.word, back.superordinate, back.base) == ("sks", "seven", "0123456789abcdef")
  for name in ("embedding", "i_star", "i_super"):
    np.testing.assert_array_equal(getattr(back, name), getattr(concept, name))
  assert set(back.values) == set(concept.values)
  for k, v in concept.values.items():
    np.testing.assert_array_equal(back.values[k], v)
  assert back.num_parameters == 8 + 6 + 3
  with pytest.raises(errors.CheckpointError, match="no concept file"):
    perf.load_concept(str(tmp_path / "missing.safetensors"))
  other = tmp_path / "other.safetensors"
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  save_file({"x": np.zeros(2, np.float32)}, str(other))
  with pytest.raises(errors.CheckpointError, match="not a jgen Perfusion concept"):
    perf.load_concept(str(other))
  with pytest.raises(errors.ConfigError, match="same word"):
    perf.concept_arrays([concept, concept], np.eye(4))


def _ddpm_unet():
  return UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_groups=4,
              context_dim=D, cross_attn_heads=2)


def _sd_unet():
  """A tiny U-Net of Stable Diffusion's layout (diffusers config keys)."""
  return UNet(**unet_settings({
      "_class_name": "UNet2DConditionModel", "block_out_channels": [8, 16],
      "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
      "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": 1,
      "cross_attention_dim": D, "attention_head_dim": 2, "norm_num_groups": 4,
      "in_channels": 4, "out_channels": 4}))


@pytest.mark.parametrize("make, channels", [(_ddpm_unet, 3), (_sd_unet, 4)])
def test_unets_without_concept_are_the_base_and_with_one_edit_cross_attention(make, channels):
  unet = make()
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, channels))
  t = jnp.array([3, 500])
  context = jax.random.normal(jax.random.key(1), (2, 5, D))
  params = unet.init(jax.random.key(2), x, t, {"context": context}, train=False)
  leaves, tree = jax.tree.flatten(params)  # off the zero inits (conv_out, proj_out)
  params = jax.tree.unflatten(tree, [
      p + 0.2 * jax.random.normal(jax.random.key(10 + i), p.shape) for i, p in enumerate(leaves)])
  base = unet.apply(params, x, t, {"context": context}, train=False)
  with perf.perfusion_edit(None, perf.Gate()):
    same = unet.apply(params, x, t, {"context": context}, train=False)
  np.testing.assert_array_equal(same, base)   # no concept: bit for bit
  layers = perf.value_layers(params)
  assert layers and all(("cross_attn" in k) or k.endswith("attn2") for k in layers)
  flat_params = flat(params["params"])   # every cross-attention value projection, the middle's too
  want = {p.rsplit("/", 2)[0] for p in flat_params
          if p.endswith(("/v/kernel", "/to_v/kernel")) and ("cross_attn" in p or "attn2" in p)}
  assert set(layers) == want and any(k.startswith("mid") for k in layers)
  # A concept at the context's first token with a value offset: the output moves; the same
  # concept with i_s = i* and no offset under the plain edit leaves every K and V as it was.
  i_star = np.asarray(context[0, :1])
  c_inv = np.eye(D)
  moved_arrays = {"i_star": i_star, "i_super": i_star, "c_inv": c_inv,
                  "values": {k: np.full((1, c), 0.5) for k, c in layers.items()}}
  with perf.perfusion_edit(moved_arrays, perf.Gate(temperature=0.0)):
    moved = unet.apply(params, x, t, {"context": context}, train=False)
  kept_arrays = {**moved_arrays, "values": {k: np.zeros((1, c)) for k, c in layers.items()}}
  with perf.perfusion_edit(kept_arrays, perf.Gate(temperature=0.0)):
    kept = unet.apply(params, x, t, {"context": context}, train=False)
  np.testing.assert_allclose(kept, base, rtol=1e-5, atol=1e-5)
  assert float(jnp.max(jnp.abs(moved - base))) > 1e-4
  with perf.perfusion_edit({**moved_arrays, "values": {}}, perf.Gate()):
    with pytest.raises(ValueError, match="no value offsets"):
      unet.apply(params, x, t, {"context": context}, train=False)


def _config(fs_run, base):
  config = load_experiment("personalize/perfusion_digits", "smoke")
  config.init_from.workdir = fs_run
  config.init_from.base.workdir = base
  return config


def test_bad_words_and_rules_are_refused(fs_run, text_base):
  config = _config(fs_run, text_base)
  config.perfusion.word = "seven"
  with pytest.raises(errors.ConfigError, match="outside the vocabulary"):
    load_method(config)
  config = _config(fs_run, text_base)
  config.optim.rules = ()
  with pytest.raises(ValueError, match="token row and value offsets"):
    load_method(config)
  config = _config(fs_run, text_base)
  config.perfusion.mode = "dreambooth"
  config.perfusion.prior_weight = 1.0
  with pytest.raises(ValueError, match="token row and the U-Net"):
    load_method(config)                     # DreamBooth with Perfusion's rules
  config.optim.rules = perf.DREAMBOOTH_RULES
  config.perfusion.prior_weight = 0.0
  with pytest.raises(errors.ConfigError, match="prior-preservation"):
    load_method(config)
  config.perfusion.mode = "rome"
  with pytest.raises(errors.ConfigError, match="choose one of"):
    load_method(config)


def test_dreambooth_loss_is_instance_plus_lambda_prior(fs_run, text_base):
  """Ruiz et al. eq. 2: L = L_instance + lambda L_prior (lambda 1 and 3 differ by exactly
  2 L_prior, the instance term unchanged)."""
  from jgen.train import inputs   # pylint: disable=import-outside-toplevel
  config = load_experiment("personalize/perfusion_digits", "smoke,dreambooth")
  config.init_from.workdir = fs_run
  config.init_from.base.workdir = text_base
  method = load_method(config)
  source = inputs.load_data(config, split=config.data.split)
  batch = {"image": jnp.asarray(np.stack([source[i]["image"] for i in range(4)]),
                                jnp.float32) / 127.5 - 1.0}
  state = method.init(jax.random.key(0), batch)
  prior = {"latents": jax.random.normal(jax.random.key(1), state.frozen["prior"]["latents"].shape),
           "caption": state.frozen["prior"]["caption"]}
  frozen = {**state.frozen, "prior": prior}
  args = (state.params, frozen, state.model_state, batch, jax.random.key(2))
  one, m1 = method.loss_fn(*args)
  three, m3 = dataclasses.replace(method, prior_weight=3.0).loss_fn(*args)
  np.testing.assert_allclose(float(one), float(m1["instance_loss"] + m1["prior_loss"]), rtol=1e-6)
  np.testing.assert_allclose(float(three - one), 2 * float(m1["prior_loss"]), rtol=1e-5)
  assert float(m3["instance_loss"]) == float(m1["instance_loss"])
  assert float(m1["prior_loss"]) > 0


def test_a_run_recorded_with_edit_false_is_textual_inversion(fs_run, text_base):
  """Runs recorded before `perfusion.mode` said `perfusion.edit` (False: the row alone)."""
  config = _config(fs_run, text_base)
  del config.perfusion["mode"]
  config.perfusion.edit = False
  assert load_method(config).mode == "textual_inversion"
  config.perfusion.edit = True
  assert load_method(config).mode == "perfusion"


@pytest.mark.slow  # a loop run, an export and two samplings: about 2 min on 2 cores
def test_a_concept_trains_exports_and_combines(tmp_path, fs_run, text_base):
  config = _config(fs_run, text_base)
  workdir = str(tmp_path / "perf")
  state = jgen.run.main(config, workdir=workdir)
  base, _ = init_from_lib.load(init_from_lib.InitFrom(text_base))
  stored = flat(state.params)
  for p, v in flat(base).items():
    np.testing.assert_array_equal(np.asarray(stored[p]), np.asarray(v), err_msg=p)
  assert set(flat(state.emas["ema"])) == {p for p in stored if p.startswith("perfusion/")}
  method = load_method(config).prepare(workdir)
  np.testing.assert_allclose(state.frozen["perfusion"]["c_inv"], method.c_inv, rtol=1e-6)
  concept = method.concept(state.ema_params, state.frozen)
  path = str(tmp_path / "sks.safetensors")
  perf.save_concept(path, concept)
  second = perf.Concept(**{**concept.__dict__, "word": "zwx"})
  c_inv = state.frozen["perfusion"]["c_inv"]
  images = perf.sample_concepts(method.ldm, state, [perf.load_concept(path), second], c_inv,
                                ["a handwritten sks", "zwx and sks"], jax.random.key(0))
  assert images.shape[0] == 2 and np.all(np.isfinite(images))
  base_images = perf.sample_concepts(method.ldm, state, [], c_inv, ["a handwritten seven"],
                                     jax.random.key(0))
  assert np.all(np.isfinite(base_images))
  with pytest.raises(errors.ConfigError, match="vocabulary"):
    perf.sample_concepts(method.ldm, state, [], c_inv, ["a handwritten sks"], jax.random.key(0))


@pytest.mark.slow  # a canvas base, two concepts and 6 x 4 samplings: about 3 min on 2 cores
def test_two_concepts_on_a_canvas_base_combine_in_one_image(tmp_path, fs_run):
  from jgen.cli import perfusion as cli   # pylint: disable=import-outside-toplevel
  base = load_experiment("ldm/text_canvas_digits", "smoke")
  base.init_from.workdir = fs_run
  base.train.eval_every = 0
  jgen.run.main(base, workdir=str(tmp_path / "canvas"))
  runs = []
  for word, digit in (("sks", 7), ("zwx", 3)):
    config = load_experiment("personalize/perfusion_digits",
                             f"smoke,canvas,word={word},digit={digit}")
    config.init_from.workdir = fs_run
    config.init_from.base.workdir = str(tmp_path / "canvas")
    runs.append(str(tmp_path / word))
    jgen.run.main(config, workdir=runs[-1])
  method = load_method(config)
  assert method.prompts == ("a zwx and a zwx",)
  assert method.ldm.tokenizer.decode(method.class_captions)[0] == "a three and a three"
  rows = cli.canvas_combine(runs, num=4, gate=perf.Gate(0.7, 0.15))
  assert [r["prompt"] for r in rows] == [
      "a seven and a three", "a three and a seven", "a sks and a three", "a seven and a zwx",
      "a sks and a zwx", "a zwx and a sks"]
  assert rows[4]["loaded"] == "sks+zwx" and rows[0]["loaded"] == "none"
  for r in rows:
    for side in ("left", "right"):
      assert -1 <= r[side]["fidelity"] <= 1 and 0 <= r[side]["judged"] <= 1
  with pytest.raises(errors.ConfigError, match="two Perfusion runs"):
    cli.canvas_combine(runs[:1], gate=perf.Gate())


@pytest.mark.slow  # a DreamBooth loop run on the text model and two samplings: about 1 min
def test_dreambooth_on_the_text_model_trains_the_unet_with_its_class_prior(tmp_path, fs_run,
                                                                           text_base):
  config = load_experiment("personalize/perfusion_digits", "smoke,dreambooth")
  config.init_from.workdir = fs_run
  config.init_from.base.workdir = text_base
  workdir = str(tmp_path / "db")
  state = jgen.run.main(config, workdir=workdir)
  base, _ = init_from_lib.load(init_from_lib.InitFrom(text_base))
  method = load_method(config).prepare(workdir)
  assert method.mode == "dreambooth" and not method.edit
  latents, index = method.class_prior(jax.device_put(base))   # seed 0: the run's own
  np.testing.assert_allclose(state.frozen["prior"]["latents"], latents, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(state.frozen["prior"]["caption"], index)
  assert latents.shape == (8, *method.ldm.latent_shape) and list(index[:6]) == [0, 1, 2, 3, 4, 0]
  stored, old = flat(state.params), flat(base)
  assert any(not np.array_equal(stored[p], old[p]) for p in old if p.startswith("unet/"))
  for p in old:
    if not p.startswith("unet/"):
      np.testing.assert_array_equal(np.asarray(stored[p]), np.asarray(old[p]), err_msg=p)
  concept = method.concept(state.ema_params, state.frozen)
  assert "+unet:" in concept.base and concept.values == {}
  c_inv = state.frozen["perfusion"]["c_inv"]
  images = perf.sample_concepts(method.ldm, state, [concept], c_inv, ["a handwritten sks"],
                                jax.random.key(0))
  assert np.all(np.isfinite(images))
  other = perf.Concept(**{**concept.__dict__,
                          "base": concept.base.split("+unet:")[0] + "+unet:0123456789abcdef"})
  with pytest.raises(errors.ConfigError, match="DreamBooth concept"):
    perf.sample_concepts(method.ldm, state, [other], c_inv, ["a handwritten sks"],
                         jax.random.key(0))
