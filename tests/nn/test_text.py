"""The word tokenizer (ids by hand, round trip, errors) and the transformer text encoder against a
NumPy reference, bidirectional, with outputs at real tokens independent of the padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.nn import text

TOK = text.WordTokenizer(max_len=8)


def _id(word):
  return text.VOCAB.index(word)


def test_ids_by_hand_and_round_trip():
  ids = TOK.encode(["A Handwritten  SEVEN", "digit7", "17", ""])
  b, e, p = 2, 3, 0
  expected = [[b, _id("a"), _id("handwritten"), _id("seven"), e, p, p, p],
              [b, _id("digit"), _id("7"), e, p, p, p, p],
              [b, _id("1"), _id("7"), e, p, p, p, p],
              [b, e, p, p, p, p, p, p]]
  np.testing.assert_array_equal(ids, np.asarray(expected, np.int32))
  assert ids.dtype == np.int32
  assert TOK.decode(ids) == ["a handwritten seven", "digit 7", "1 7", ""]
  np.testing.assert_array_equal(np.asarray(TOK.mask(ids)), np.asarray(expected) != 0)
  # Every caption of every digit survives encode -> decode.
  captions = [text.caption(t, k) for k in range(10) for t in text.TEMPLATES]
  assert TOK.decode(TOK.encode(captions)) == [" ".join(TOK.split(c)) for c in captions]
  assert text.caption("a picture of {a} {word}", 8) == "a picture of an eight"
  assert text.default_prompt(3) == "a handwritten three"
  assert text.parse_prompts(" a handwritten three, the digit 7 ,") == (
      "a handwritten three", "the digit 7")


def test_captions_of_a_canvas_and_of_a_new_word():
  assert text.template_slots(text.TEMPLATES) == 1 and text.template_slots(text.PAIR_TEMPLATES) == 2
  assert [text.caption(t, 73, 2) for t in text.PAIR_TEMPLATES] == [
      "a seven and a three", "7 and 3", "7 3", "seven three", "a handwritten seven and a three"]
  assert text.caption(text.PAIR_TEMPLATES[0], 8, 2) == "a zero and an eight"   # label 08
  assert text.caption(text.PAIR_TEMPLATES[0], 0, 2, word="sks") == "a sks and a sks"
  assert text.caption("the digit {digit}", 5, word="sks") == "the digit sks"
  captions = [text.caption(t, k, 2) for k in range(100) for t in text.PAIR_TEMPLATES]
  TOK.check(captions)                              # every canvas caption is in the vocabulary
  with pytest.raises(ValueError, match="0..99"):
    text.caption(text.PAIR_TEMPLATES[0], 100, 2)
  with pytest.raises(ValueError, match="different numbers of digits"):
    text.template_slots(text.TEMPLATES + text.PAIR_TEMPLATES)
  with pytest.raises(ValueError, match="mixes"):
    text.template_slots(["{word} and {word1}"])
  with pytest.raises(ValueError, match="placeholders"):
    text.template_slots(["a {colour0}"])


def test_errors_name_the_problem():
  with pytest.raises(ValueError, match=r"outside the vocabulary: \['sevn', '!'\].*handwritten"):
    TOK.encode("a handwritten sevn!")
  with pytest.raises(ValueError, match=r"has 8 words.*needs 10 tokens.*max_len=8"):
    TOK.encode("a picture of the number seven in ink")
  with pytest.raises(ValueError, match="outside the vocabulary"):
    TOK.encode("<eos>")  # special tokens are not words
  np.testing.assert_array_equal(TOK.encode("a sevn", strict=False)[0, :4],
                                [2, _id("a"), TOK.unk_id, 3])
  with pytest.raises(ValueError, match="no prompts"):
    TOK.check([])
  with pytest.raises(ValueError, match="placeholders"):
    text.caption("a {colour} {word}", 1)
  with pytest.raises(ValueError, match="start with"):
    text.WordTokenizer(vocab=("a", "b", "c", "d"))


def _encoder(**kw):
  kw = {"vocab_size": TOK.vocab_size, "max_len": 12, "context_dim": 8, "width": 16,
        "depth": 1, "num_heads": 2, **kw}
  return text.TransformerTextEncoder(text.TextTransformer(**kw))


def _layer_norm(x, p):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def _dense(x, p):
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def _numpy_encoder(params, tokens, mask, heads):
  """One-block reference: embeddings + positions, masked bidirectional attention, GELU MLP."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
  h = p["tok_embed"]["embedding"][tokens] + p["pos_embed"][:tokens.shape[1]]
  blk = p["blocks_0"]
  b, n, c = h.shape
  q, k, v = np.split(_dense(_layer_norm(h, blk["ln1"]), blk["attn"]["qkv"]), 3, axis=-1)
  q, k, v = (a.reshape(b, n, heads, c // heads) for a in (q, k, v))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(c // heads)
  logits = np.where(mask[:, None, None, :], logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  att = np.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, n, c)
  h = h + _dense(att, blk["attn"]["proj"])
  u = _dense(_layer_norm(h, blk["ln2"]), blk["fc1"])
  gelu = 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3)))
  h = h + _dense(gelu, blk["fc2"])
  return _dense(_layer_norm(h, p["ln_f"]), p["proj"])


def test_encoder_matches_numpy_and_is_an_encoder():
  enc = _encoder()
  assert isinstance(enc, text.TextEncoder)
  ids = TOK.encode(["a handwritten seven", "7", "the digit 3"])
  mask = np.asarray(TOK.mask(ids))
  params = enc.init(jax.random.key(0), jnp.asarray(ids), jnp.asarray(mask))
  out = np.asarray(enc.encode(params, jnp.asarray(ids), jnp.asarray(mask)))
  assert out.shape == (3, 8, 8) and out.dtype == np.float32
  np.testing.assert_allclose(out, _numpy_encoder(params, ids, mask, heads=2), atol=2e-5)


def test_padding_never_changes_the_real_tokens_outputs():
  enc = _encoder(depth=2)
  prompts = ["a handwritten seven", "7", "a picture of an eight"]
  short = TOK.encode(prompts)
  long_tok = text.WordTokenizer(max_len=12)
  long = long_tok.encode(prompts)
  params = enc.init(jax.random.key(1), jnp.asarray(long), long_tok.mask(jnp.asarray(long)))
  a = np.asarray(enc.encode(params, jnp.asarray(short), TOK.mask(jnp.asarray(short))))
  b = np.asarray(enc.encode(params, jnp.asarray(long), long_tok.mask(jnp.asarray(long))))
  real = short != 0
  np.testing.assert_allclose(a[real], b[:, :8][real], atol=1e-6)
  # Any ids at the padded positions: the real tokens' outputs stay (padding is never a key).
  junk = np.where(long == 0, np.random.default_rng(0).integers(4, TOK.vocab_size, long.shape),
                  long).astype(np.int32)
  c = np.asarray(enc.encode(params, jnp.asarray(junk), jnp.asarray(long != 0)))
  np.testing.assert_allclose(c[long != 0], b[long != 0], atol=1e-6)
  # Bidirectional: a later word changes the outputs at earlier positions.
  other = TOK.encode(["a handwritten three", "7", "a picture of an eight"])
  d = np.asarray(enc.encode(params, jnp.asarray(other), TOK.mask(jnp.asarray(other))))
  assert np.abs(d[0, :3] - a[0, :3]).max() > 1e-4


def test_encoder_rejects_bad_inputs():
  enc = _encoder(max_len=4)
  ids = jnp.asarray(TOK.encode(["7"]))
  with pytest.raises(ValueError, match="at most max_len=4"):
    enc.init(jax.random.key(0), ids, TOK.mask(ids))
  with pytest.raises(ValueError, match="integer ids"):
    enc.init(jax.random.key(0), ids.astype(jnp.float32), TOK.mask(ids))
