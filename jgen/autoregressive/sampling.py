"""Autoregressive sampling of token sequences: logit filters and the cached / uncached samplers.

Filters are pure functions of a logits array ``[..., V]`` (the last axis is the vocabulary),
applied in the order of common practice: temperature, then top-k, then top-p.

* temperature T: ``logits / T`` (T -> 0 approaches greedy decoding; T = 0 is argmax);
* top-k (Fan et al. 2018): keep exactly the k largest logits (ties broken by the lower index),
  the rest get -inf;
* top-p, nucleus (Holtzman et al. 2020): sort the probabilities descending and keep the
  smallest prefix whose cumulative probability reaches p, i.e. token j of the sorted order is
  kept iff the probability mass before it is < p (the top token is always kept).

Both samplers draw token i with the key ``fold_in(rng, i)`` through `sample_logits`, so with
the same logits they draw the same tokens:

* `sample_cached`: ``prefill_fn() -> (logits of t_0, cache)``, then one `lax.scan` of
  ``decode_fn(t_{i-1}, cache, i - 1) -> (logits of t_i, cache)``: one position per step (a
  transformer's key/value cache, `jgen.nn.transformer.Transformer.decode`);
* `sample_uncached`: the reference, one `lax.scan` of ``logits_fn(buffer)[:, i]`` over a
  full-length buffer (positions >= i hold zeros, which a causal model ignores): the whole
  prefix is recomputed at every step. Tests check the two agree; `benchmarks/ar_sampling.py`
  times them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["filter_logits", "sample_cached", "sample_logits", "sample_uncached",
           "temperature_scale", "top_k_filter", "top_p_filter"]


def _check(temperature: float, top_k: int, top_p: float) -> None:
  if temperature < 0:
    raise ValueError(f"temperature={temperature}: use a value >= 0 (0 = greedy)")
  if top_k < 0:
    raise ValueError(f"top_k={top_k}: use 0 (off) or the number of tokens to keep")
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f"top_p={top_p}: use a probability in (0, 1] (1 = off)")


def _ranks(logits: Array) -> Array:
  """Rank of every entry on the last axis in descending order (0 = largest; ties: lower index
  first, as the stable sort orders them)."""
  order = jnp.argsort(-logits, axis=-1, stable=True)
  return jnp.argsort(order, axis=-1, stable=True)


def temperature_scale(logits: Array, temperature: float) -> Array:
  """``logits / temperature`` (temperature > 0)."""
  if temperature <= 0:
    raise ValueError(f"temperature={temperature}: scaling needs a value > 0")
  return logits / temperature


def top_k_filter(logits: Array, k: int) -> Array:
  """Keeps exactly the ``k`` largest logits of the last axis; the rest become -inf (0: all)."""
  if k < 0:
    raise ValueError(f"top_k={k}: use 0 (off) or the number of tokens to keep")
  if k == 0 or k >= logits.shape[-1]:
    return logits
  return jnp.where(_ranks(logits) < k, logits, -jnp.inf)


def top_p_filter(logits: Array, p: float) -> Array:
  """Keeps the smallest set of most probable tokens whose probability sums to >= ``p``.

  With probabilities sorted descending, ``q_(1) >= q_(2) >= ...``, token ``(j)`` is kept iff
  ``sum_{l < j} q_(l) < p``; the others become -inf. ``p = 1`` keeps every token.
  """
  if not 0.0 < p <= 1.0:
    raise ValueError(f"top_p={p}: use a probability in (0, 1] (1 = off)")
  if p >= 1.0:
    return logits
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  sorted_probs = -jnp.sort(-probs, axis=-1)
  mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
  keep_sorted = mass_before < p
  keep = jnp.take_along_axis(keep_sorted, _ranks(logits), axis=-1)
  return jnp.where(keep, logits, -jnp.inf)


def filter_logits(logits: Array, *, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> Array:
  """Temperature, then top-k, then top-p (see the module docstring); T = 0 leaves the logits
  unscaled (`sample_logits` then takes the argmax)."""
  _check(temperature, top_k, top_p)
  logits = logits.astype(jnp.float32)
  if temperature > 0:
    logits = temperature_scale(logits, temperature)
  return top_p_filter(top_k_filter(logits, top_k), top_p)


def sample_logits(rng: Array, logits: Array, *, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> Array:
  """One int32 token per row of ``logits`` [..., V]: a draw from the filtered softmax, or the
  argmax at temperature 0."""
  logits = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def sample_cached(prefill_fn: Callable[[], tuple[Array, Any]],
                  decode_fn: Callable[[Array, Any, Array], tuple[Array, Any]],
                  rng: Array, *, length: int, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> Array:
  """Samples ``[B, length]`` int32 tokens with a cache: a prefill, then one `lax.scan`.

  Args:
    prefill_fn: ``() -> (logits of token 0 [B, V], cache)``.
    decode_fn: ``(token i-1 [B], cache, i-1) -> (logits of token i [B, V], cache)``.
    rng: base key; token i uses ``fold_in(rng, i)``.
    length: tokens per sequence.
    temperature, top_k, top_p: `filter_logits`.
  """
  _check(temperature, top_k, top_p)
  kw = dict(temperature=temperature, top_k=top_k, top_p=top_p)
  logits, cache = prefill_fn()
  first = sample_logits(jax.random.fold_in(rng, 0), logits, **kw)

  def step(carry, i):
    token, cache = carry
    logits, cache = decode_fn(token, cache, i - 1)
    token = sample_logits(jax.random.fold_in(rng, i), logits, **kw)
    return (token, cache), token

  _, rest = jax.lax.scan(step, (first, cache), jnp.arange(1, length, dtype=jnp.int32))
  return jnp.concatenate([first[:, None], rest.T], axis=1)


def sample_uncached(logits_fn: Callable[[Array], Array], rng: Array, *, batch_size: int,
                    length: int, temperature: float = 1.0, top_k: int = 0,
                    top_p: float = 1.0) -> Array:
  """The reference sampler: ``[B, length]`` tokens, recomputing the whole sequence each step.

  Args:
    logits_fn: ``tokens [B, length] -> logits [B, length, V]``, entry i depending on tokens
      before i only (a causal model's full forward).
    rng, length, temperature, top_k, top_p: as `sample_cached` (same draws for same logits).
    batch_size: B.
  """
  _check(temperature, top_k, top_p)
  kw = dict(temperature=temperature, top_k=top_k, top_p=top_p)

  def step(tokens, i):
    logits = jax.lax.dynamic_index_in_dim(logits_fn(tokens), i, axis=1, keepdims=False)
    token = sample_logits(jax.random.fold_in(rng, i), logits, **kw)
    return jax.lax.dynamic_update_index_in_dim(tokens, token, i, axis=1), None

  tokens, _ = jax.lax.scan(step, jnp.zeros((batch_size, length), jnp.int32),
                           jnp.arange(length, dtype=jnp.int32))
  return tokens
