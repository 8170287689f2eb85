"""Logit filters against NumPy, the draw distribution, and the cached sampler against the
uncached reference (the same tokens for the same key)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.autoregressive import sampling
from jgen.nn.transformer import Transformer


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _numpy_top_p_keep(logits, p):
  """The smallest set of most probable tokens whose probabilities sum to >= p."""
  keep = np.zeros(logits.shape, bool)
  for r, row in enumerate(logits):
    probs = _softmax(row.astype(np.float64))
    order = np.argsort(-probs, kind="stable")
    total = 0.0
    for j in order:
      keep[r, j] = True
      total += probs[j]
      if total >= p:
        break
  return keep


def test_top_k_keeps_exactly_k_largest():
  logits = np.array(jax.random.normal(jax.random.key(0), (6, 20)))
  logits[0, :5] = 3.0  # ties at the top: still exactly k, the lower indices first
  for k in (1, 3, 7, 19):
    out = np.asarray(sampling.top_k_filter(jnp.asarray(logits), k))
    kept = np.isfinite(out)
    assert np.all(kept.sum(-1) == k)
    expected = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    np.testing.assert_array_equal(np.sort(np.nonzero(kept)[1].reshape(6, k), -1),
                                  np.sort(expected, -1))
    np.testing.assert_array_equal(out[kept], logits[kept])  # kept logits unchanged
  np.testing.assert_array_equal(sampling.top_k_filter(jnp.asarray(logits), 0), logits)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.99])
def test_top_p_is_the_smallest_nucleus(p):
  logits = 2.0 * np.asarray(jax.random.normal(jax.random.key(1), (16, 30)))
  out = np.asarray(sampling.top_p_filter(jnp.asarray(logits), p))
  np.testing.assert_array_equal(np.isfinite(out), _numpy_top_p_keep(logits, p))
  mass = np.where(np.isfinite(out), _softmax(logits), 0.0).sum(-1)
  assert np.all(mass >= p - 1e-6)


def test_temperature_scales_logits_and_zero_is_greedy():
  logits = np.asarray(jax.random.normal(jax.random.key(2), (4, 10)))
  for t in (0.5, 1.0, 2.0):
    got = jax.nn.softmax(sampling.filter_logits(jnp.asarray(logits), temperature=t))
    np.testing.assert_allclose(got, _softmax(logits / t), rtol=1e-5, atol=1e-7)
  greedy = sampling.sample_logits(jax.random.key(0), jnp.asarray(logits), temperature=0.0)
  np.testing.assert_array_equal(greedy, logits.argmax(-1))


def test_draws_follow_the_filtered_distribution():
  logits = np.array([2.0, 1.5, 1.0, 0.0, -1.0, -3.0], np.float32)
  n = 40000
  draws = jax.jit(lambda r: sampling.sample_logits(
      r, jnp.broadcast_to(logits, (n, 6)), temperature=0.7, top_k=4, top_p=0.9))(
          jax.random.key(3))
  freq = np.bincount(np.asarray(draws), minlength=6) / n
  # NumPy: scale by 1/T, keep the top 4, then the 0.9 nucleus of those, renormalize.
  scaled = logits / 0.7
  scaled[np.argsort(-scaled)[4:]] = -np.inf
  keep = _numpy_top_p_keep(scaled[None], 0.9)[0]
  expected = np.where(keep, _softmax(np.where(keep, scaled, -np.inf)), 0.0)
  assert np.all(freq[~keep] == 0)
  np.testing.assert_allclose(freq, expected, atol=0.01)  # ~4 standard errors at n = 40000


def test_bad_settings_are_clear_errors():
  logits = jnp.zeros((2, 5))
  with pytest.raises(ValueError, match="top_p"):
    sampling.filter_logits(logits, top_p=0.0)
  with pytest.raises(ValueError, match="top_k"):
    sampling.filter_logits(logits, top_k=-1)
  with pytest.raises(ValueError, match="temperature"):
    sampling.filter_logits(logits, temperature=-1.0)


@pytest.mark.parametrize("num_classes,settings", [
    (0, dict()), (4, dict(temperature=0.8, top_k=5, top_p=0.9)), (4, dict(temperature=0.0))])
def test_cached_sampler_equals_uncached(num_classes, settings):
  vocab, length, b = 13, 9, 6
  model = Transformer(vocab_size=vocab, seq_len=length, width=32, depth=2, num_heads=4,
                      num_classes=num_classes)
  label = jnp.arange(b, dtype=jnp.int32) % 4 if num_classes else None
  params = model.init(jax.random.key(0), jnp.zeros((1, length), jnp.int32),
                      label=None if label is None else label[:1])
  # Larger logits than at init (std 0.02 weights give a near-uniform model): a peaked model.
  params = jax.tree.map(lambda x: 8.0 * x, params)

  @jax.jit
  def both(rng):
    prefill = lambda: model.apply(params, b, label=label, method=Transformer.prefill)
    decode = lambda t, c, i: model.apply(params, t, c, i, method=Transformer.decode)
    cached = sampling.sample_cached(prefill, decode, rng, length=length, **settings)
    full = lambda tokens: model.apply(params, tokens, label=label)
    return cached, sampling.sample_uncached(full, rng, batch_size=b, length=length,
                                            **settings)

  for seed in range(3):
    cached, uncached = both(jax.random.key(seed))
    np.testing.assert_array_equal(cached, uncached)
    assert cached.shape == (b, length) and cached.dtype == jnp.int32
    assert len(np.unique(np.asarray(cached))) > 1  # not a degenerate constant sequence
