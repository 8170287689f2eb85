"""The decoder-only transformer: causality by gradients, attention against NumPy, the
key/value-cache decode path against the full forward, input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.nn.transformer import Block, CausalSelfAttention, Transformer


def _dependence(fn, x):
  """|d out[i] / d x[j]| summed over features: a [T_out, T_in] matrix (batch of one)."""
  jac = jax.jit(jax.jacrev(fn))(x)  # [1, T_out, F_out, 1, T_in, F_in]
  return np.asarray(jnp.abs(jac).sum(axis=(0, 2, 3, 5)))


@pytest.mark.parametrize("num_classes,context_len", [(0, 0), (3, 0), (0, 2)])
def test_whole_network_is_causal_in_its_tokens(num_classes, context_len):
  vocab, length = 7, 6
  model = Transformer(vocab_size=vocab, seq_len=length, width=16, depth=2, num_heads=2,
                      num_classes=num_classes, context_len=context_len)
  label = jnp.array([1]) if num_classes else None
  context = jnp.ones((1, context_len, 5)) if context_len else None
  tokens = jax.random.randint(jax.random.key(0), (1, length), 0, vocab)
  params = model.init(jax.random.key(1), tokens, label=label, context=context)
  soft = jax.nn.one_hot(tokens, vocab)
  dep = _dependence(lambda s: model.apply(params, s, label=label, context=context), soft)
  # logits[i] predict token i: they must not see tokens i, i+1, ... and must see each j < i.
  assert np.all(dep[np.triu_indices(length)] == 0.0)
  assert np.all(dep[np.tril_indices(length, -1)] > 0.0)
  # Soft one-hot tokens give the same logits as int tokens.
  np.testing.assert_allclose(model.apply(params, soft, label=label, context=context),
                             model.apply(params, tokens, label=label, context=context),
                             rtol=1e-5, atol=1e-6)


def test_prefix_reaches_every_position():
  model = Transformer(vocab_size=5, seq_len=4, width=16, depth=1, num_heads=2, num_classes=3,
                      context_len=2)
  tokens = jnp.array([[1, 2, 3, 4]])
  params = model.init(jax.random.key(0), tokens, label=jnp.array([0]),
                      context=jnp.zeros((1, 2, 3)))
  dep = _dependence(lambda c: model.apply(params, tokens, label=jnp.array([0]), context=c),
                    jax.random.normal(jax.random.key(1), (1, 2, 3)))
  assert np.all(dep > 0)  # every logit position sees both context vectors
  a = model.apply(params, tokens, label=jnp.array([0]), context=jnp.zeros((1, 2, 3)))
  b = model.apply(params, tokens, label=jnp.array([2]), context=jnp.zeros((1, 2, 3)))
  assert np.all(np.abs(np.asarray(a - b)).sum(-1) > 0)  # the class changes every position


def test_block_is_causal_in_its_inputs():
  block = Block(width=8, num_heads=2)
  x = jax.random.normal(jax.random.key(0), (1, 5, 8))
  params = block.init(jax.random.key(1), x)
  dep = _dependence(lambda h: block.apply(params, h)[0], x)
  assert np.all(dep[np.triu_indices(5, 1)] == 0.0)  # no future input
  assert np.all(dep[np.tril_indices(5)] > 0.0)       # each past and current one


def _numpy_causal_attention(x, params, heads):
  w_qkv, b_qkv = params["qkv"]["kernel"], params["qkv"]["bias"]
  w_o, b_o = params["proj"]["kernel"], params["proj"]["bias"]
  b, s, c = x.shape
  d = c // heads
  q, k, v = np.split(x @ w_qkv + b_qkv, 3, axis=-1)
  split = lambda a: a.reshape(b, s, heads, d).transpose(0, 2, 1, 3)
  q, k, v = split(q), split(k), split(v)
  logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
  logits = np.where(np.tril(np.ones((s, s), bool)), logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  out = (w @ v).transpose(0, 2, 1, 3).reshape(b, s, c)
  return out @ w_o + b_o


def test_attention_matches_numpy():
  attn = CausalSelfAttention(width=12, num_heads=3)
  x = jax.random.normal(jax.random.key(0), (2, 5, 12))
  params = attn.init(jax.random.key(1), x)
  got, _ = attn.apply(params, x)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
  np.testing.assert_allclose(got, _numpy_causal_attention(np.asarray(x, np.float64), p, 3),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_classes,context_len", [(0, 0), (4, 0), (4, 3)])
def test_cached_decoding_matches_full_forward(num_classes, context_len):
  vocab, length, b = 9, 7, 3
  model = Transformer(vocab_size=vocab, seq_len=length, width=24, depth=3, num_heads=3,
                      num_classes=num_classes, context_len=context_len)
  label = jnp.array([0, 3, 1]) if num_classes else None
  context = (jax.random.normal(jax.random.key(5), (b, context_len, 4)) if context_len
             else None)
  tokens = jax.random.randint(jax.random.key(0), (b, length), 0, vocab)
  params = model.init(jax.random.key(1), tokens, label=label, context=context)
  full = model.apply(params, tokens, label=label, context=context)
  logits, cache = jax.jit(lambda p: model.apply(p, b, label=label, context=context,
                                                method=Transformer.prefill))(params)
  assert cache[0]["k"].shape == (b, context_len + length, 3, 8)  # max_len = P + N - 1
  decode = jax.jit(lambda t, c, i: model.apply(params, t, c, i, method=Transformer.decode))
  steps = [logits]
  for i in range(length - 1):
    logits, cache = decode(tokens[:, i], cache, jnp.int32(i))
    steps.append(logits)
  np.testing.assert_allclose(np.stack(steps, axis=1), full, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_clear_errors():
  model = Transformer(vocab_size=5, seq_len=4, width=8, depth=1, num_heads=2, num_classes=3)
  tokens = jnp.zeros((2, 4), jnp.int32)
  params = model.init(jax.random.key(0), tokens, label=jnp.zeros((2,), jnp.int32))
  with pytest.raises(ValueError, match="class-conditional"):
    model.apply(params, tokens)
  with pytest.raises(ValueError, match="1..4"):
    model.apply(params, jnp.zeros((2, 5), jnp.int32), label=jnp.zeros((2,), jnp.int32))
  with pytest.raises(ValueError, match="must divide"):
    Transformer(vocab_size=5, seq_len=4, width=10, num_heads=3).init(jax.random.key(0), tokens)
  ctx = Transformer(vocab_size=5, seq_len=4, width=8, depth=1, num_heads=2, context_len=2)
  with pytest.raises(ValueError, match="context"):
    ctx.init(jax.random.key(0), tokens)
