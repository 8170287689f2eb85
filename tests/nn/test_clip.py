"""The CLIP text tower against a NumPy reference (layers, causal mask, activations, the layer SD
reads, the pooled output, bfloat16), and the BPE tokenizer against transformers' stored ids."""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from jgen.nn import clip
from jgen.nn.clip_tokenizer import BOS, EOS, CLIPTokenizer, bytes_to_unicode, pre_tokenize

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "convert" / "fixtures"
TINY = dict(vocab_size=50, max_position_embeddings=12, hidden_size=16, intermediate_size=24,
            num_hidden_layers=3, num_attention_heads=2)
HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None


def _ids(rng, batch=3, length=12):
  ids = rng.integers(1, 48, (batch, length)).astype(np.int32)
  ids[:, 0] = 48
  ids[0, 5:] = 49  # eos then eos-padding (SD 1.x)
  ids[1, 7], ids[1, 8:] = 49, 0  # eos then zero padding (SD 2.x)
  ids[2, -1] = 49
  return ids


def _params(model, seed=0):
  ids = jnp.zeros((1, model.max_position_embeddings), jnp.int32)
  params = jax.jit(model.init)(jax.random.key(seed), ids)
  # Perturb every leaf (norm scales and biases included) so mix-ups show in the outputs.
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda x: np.asarray(x) + 0.1 * rng.normal(size=x.shape)
                                .astype(np.float32), params)


def _ln(x, p, eps=1e-5):
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _dense(x, p):
  return x @ np.asarray(p["kernel"], np.float64) + p["bias"]


def _reference(params, ids, act):
  """All hidden states [h_0, ..., h_N] of CLIP's text tower in float64 NumPy."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params["params"])
  length, heads = ids.shape[1], TINY["num_attention_heads"]
  h = p["token_embedding"]["embedding"][ids] + p["position_embedding"]["embedding"][:length]
  hs = [h]
  mask = np.triu(np.full((length, length), -np.inf), 1)
  for i in range(TINY["num_hidden_layers"]):
    lp = p[f"layers_{i}"]
    x = _ln(h, lp["layer_norm1"])
    split = lambda y: y.reshape(*y.shape[:2], heads, -1).transpose(0, 2, 1, 3)
    q, k, v = (split(_dense(x, lp["self_attn"][n])) for n in ("q_proj", "k_proj", "v_proj"))
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]) + mask
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    attn = (w @ v).transpose(0, 2, 1, 3).reshape(h.shape)
    h = h + _dense(attn, lp["self_attn"]["out_proj"])
    y = _dense(_ln(h, lp["layer_norm2"]), lp["mlp"]["fc1"])
    y = y / (1 + np.exp(-1.702 * y)) if act == "quick_gelu" else 0.5 * y * (1 + erf(y / np.sqrt(2)))
    h = h + _dense(y, lp["mlp"]["fc2"])
    hs.append(h)
  return hs, p["final_layer_norm"]


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_matches_numpy_reference(act):
  model = clip.CLIPTextModel(**TINY, hidden_act=act)
  params = _params(model)
  ids = _ids(np.random.default_rng(0))
  hs, final = _reference(params, ids, act)
  apply = model.apply  # eager: one compile per flag combination would cost more here
  out, pooled = apply(params, ids, return_pooled=True)
  # float32 against float64: outputs are O(1) after the LayerNorm, 1e-5 is float32 rounding.
  np.testing.assert_allclose(out, _ln(hs[-1], final), atol=1e-5)
  eos = np.argmax(ids, axis=1)  # the legacy rule: <|endoftext|> is the largest id
  np.testing.assert_allclose(pooled, _ln(hs[-1], final)[np.arange(3), eos], atol=1e-5)
  np.testing.assert_allclose(apply(params, ids, output_layer=-2), _ln(hs[-2], final), atol=1e-5)
  np.testing.assert_allclose(apply(params, ids, output_layer=0), _ln(hs[0], final), atol=1e-5)
  raw = apply(params, ids, output_layer=-2, final_norm=False)  # SDXL's context
  np.testing.assert_allclose(raw, hs[-2], atol=1e-5 * np.abs(hs[-2]).max())
  # Causal: changing the last tokens leaves earlier positions' states unchanged.
  changed = ids.copy()
  changed[:, -3:] = 7
  np.testing.assert_allclose(apply(params, changed)[:, :-3], out[:, :-3], atol=1e-6)


def test_pooled_position_rules():
  hidden = jnp.arange(2 * 5 * 1, dtype=jnp.float32).reshape(2, 5, 1)
  ids = jnp.array([[48, 3, 49, 49, 49], [48, 60, 2, 49, 0]])
  np.testing.assert_array_equal(clip.pool_eos(hidden, ids)[:, 0], [2, 6])  # argmax: 49, 60
  np.testing.assert_array_equal(clip.pool_eos(hidden, ids, 49)[:, 0], [2, 8])  # first 49


def test_bfloat16_runs_close_to_float32():
  model = clip.CLIPTextModel(**TINY, hidden_act="gelu")
  params = _params(model, seed=1)
  ids = _ids(np.random.default_rng(1))
  ref = model.apply(params, ids)
  out = clip.CLIPTextModel(**TINY, hidden_act="gelu", dtype=jnp.bfloat16).apply(params, ids)
  assert out.dtype == jnp.bfloat16
  # bfloat16 keeps 8 bits of mantissa (relative error 2^-8 per op) over 3 layers.
  assert float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref))) < 0.1


def test_errors_name_the_fix():
  model = clip.CLIPTextModel(**TINY)
  ids = jax.ShapeDtypeStruct((1, 12), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.key(0), ids)
  with pytest.raises(ValueError, match="max_position_embeddings=12"):
    jax.eval_shape(model.apply, params, jax.ShapeDtypeStruct((1, 13), jnp.int32))
  with pytest.raises(ValueError, match=r"output_layer=5 is outside the 4 hidden states"):
    jax.eval_shape(lambda p, x: model.apply(p, x, output_layer=5), params, ids)
  with pytest.raises(ValueError, match="'quick_gelu'"):
    clip.CLIPTextModel(**{**TINY, "hidden_act": "relu"}).init(jax.random.key(0),
                                                              jnp.zeros((1, 4), jnp.int32))


# ------------------------------------------------------------------------------- tokenizer


def test_pre_tokenize_and_bytes():
  table = bytes_to_unicode()
  assert len(set(table.values())) == 256 and list(table.values())[0] == "!"
  assert table[ord(" ")] == "Ġ"
  assert pre_tokenize("it's a x² test!! 12 café 東京") == [
      "it", "'s", "a", "x", "²", "test", "!!", "1", "2", "café", "東京"]
  assert pre_tokenize("<|endoftext|>") == ["<|", "endoftext", "|>"]


def _tiny_tokenizer(**kw):
  symbols = list(bytes_to_unicode().values())
  merges = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>")]
  vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
  return CLIPTokenizer({t: i for i, t in enumerate(vocab)}, merges, max_length=8, **kw)


def test_tiny_vocabulary_by_hand(tmp_path):
  tok = _tiny_tokenizer()
  bos, eos, cat, dog = 516, 517, 513, 515
  assert tok.encode("Cat  DOG") == [bos, cat, dog, eos]
  ca = 512  # "cats": c a t s</w> -> ca t s</w> (no merge of ca with t, only with t</w>)
  assert tok.encode("cats", add_special_tokens=False) == [ca, tok.encoder["t"],
                                                           tok.encoder["s</w>"]]
  np.testing.assert_array_equal(tok(["cat", "", "cat " * 9]), [
      [bos, cat, eos, eos, eos, eos, eos, eos], [bos, eos] + [eos] * 6,
      [bos] + [cat] * 6 + [eos]])
  new = tok.add_tokens(["<my-thing>", "ca"])  # "ca" is already a vocabulary token
  assert new == [518, ca] and tok.vocab_size == 519
  assert tok.encode("a<MY-thing>s cat") == [
      bos, tok.encoder["a</w>"], 518, tok.encoder["s</w>"], cat, eos]
  # A pipeline folder: vocab.json, merges.txt, the pad token, added tokens.
  (tmp_path / "vocab.json").write_text(json.dumps(tok.encoder))
  (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(
      " ".join(m) for m in tok.ranks) + "\n")
  (tmp_path / "special_tokens_map.json").write_text(json.dumps(
      {"pad_token": {"content": "!", "lstrip": False}}))
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(
      {"pad_token": "<|endoftext|>", "model_max_length": 6,
       "added_tokens_decoder": {"518": {"content": "<my-thing>", "special": False}}}))
  loaded = CLIPTokenizer.from_folder(str(tmp_path))
  assert loaded.pad_id == 0 and loaded.max_length == 6 and loaded.vocab_size == 519
  np.testing.assert_array_equal(loaded(["<my-thing> dog!"]), [[bos, 518, dog, 0, eos, 0]])
  with pytest.raises(FileNotFoundError, match="merges.txt"):
    CLIPTokenizer.from_folder(str(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match="pad_token must be a vocabulary token"):
    _tiny_tokenizer(pad_token="<pad>")


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="CLIP's BPE vocabulary ships with open_clip: "
                    "pip install --no-deps open_clip_torch")
def test_open_clip_vocabulary_matches_transformers_ids():
  stored = json.loads((FIXTURES / "clip_tokenizer.json").read_text(encoding="utf-8"))
  tok = CLIPTokenizer.from_open_clip()
  assert tok.vocab_size == 49408 and len(tok.ranks) == 48894
  assert tok.encode("a photo of a cat") == [49406, 320, 1125, 539, 320, 2368, 49407]
  np.testing.assert_array_equal(tok(stored["prompts"]), stored["ids_pad_eos"])
  bang = CLIPTokenizer.from_open_clip(pad_token="!")
  assert bang.pad_id == 0
  np.testing.assert_array_equal(bang(stored["prompts"]), stored["ids_pad_bang"])
