"""A decoder-only transformer over token sequences, with a key/value-cache decode path.

The GPT layout (Radford et al. 2019) as taming-transformers' prior over VQ codes uses it:
token embedding + learned positions (raster order for a code map), ``depth`` pre-LayerNorm
blocks ``x + Attn(LN(x))``, ``x + MLP(LN(x))`` with causal multi-head self-attention and a
GELU MLP, a final LayerNorm and a linear head to ``vocab_size`` logits.

**Prefix.** Every sequence starts with ``num_prefix = context_len + 1`` prefix positions: the
``context_len`` vectors of an optional context (text-encoder tokens, projected to ``width``:
text conditioning plugs in here) and then one start token, which is the class embedding of
``label`` for a class-conditional model (``num_classes > 0``) or a learned start vector. The
network sees ``[prefix, t_0, ..., t_{T-2}]`` and the output at prefix position ``P - 1 + i``
gives the logits of ``t_i``: ``__call__(tokens)[:, i]`` is ``log p(t_i | t_<i, prefix)`` up to
normalization (the shift is inside the model, so callers pass the tokens they score).

**Cache.** `prefill` runs the prefix once and returns the logits of ``t_0`` with every
layer's keys and values in a cache of ``max_len = P + seq_len - 1`` positions; `decode` takes
one token at position ``P + i``, attends to the cached keys/values of positions ``<= P + i``
and returns the logits of ``t_{i+1}`` with the cache updated in place
(``lax.dynamic_update_slice``): one position's compute per step instead of the whole prefix.

Why not `jgen.nn.layers.AttnBlock` / `CrossAttnBlock`: those attend over a feature map
``[B, H, W, C]`` with group normalization, without a causal mask and without a way to hand
keys and values in and out; a cache needs attention over an explicit ``[B, L, heads, d]``
key/value array. Attention itself is `jax.nn.dot_product_attention` (``is_causal`` on full
sequences, a position mask on the cache; softmax in float32).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any
Cache = list[dict[str, Array]]

__all__ = ["Block", "Cache", "CausalSelfAttention", "Transformer"]

_INIT = nn.initializers.normal(0.02)


def _heads(x: Array, num_heads: int) -> Array:
  b, length, c = x.shape
  return x.reshape(b, length, num_heads, c // num_heads)


def _attend(q: Array, k: Array, v: Array, *, mask: Array | None, causal: bool) -> Array:
  """`jax.nn.dot_product_attention` in float32 (softmax stability), cast back to q's dtype."""
  out = jax.nn.dot_product_attention(q.astype(jnp.float32), k.astype(jnp.float32),
                                     v.astype(jnp.float32), mask=mask, is_causal=causal)
  return out.astype(q.dtype)


class CausalSelfAttention(nn.Module):
  """Multi-head causal self-attention: ``softmax(q k^T / sqrt(d) + causal mask) v``.

  Attributes:
    width: model width C; ``num_heads`` must divide it (head size d = C / heads).
    num_heads: attention heads.
    out_init_scale: std of the output projection's init (GPT-2: 0.02 / sqrt(2 depth)).
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  width: int
  num_heads: int
  out_init_scale: float = 0.02
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    if self.width % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide width={self.width}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.qkv = nn.Dense(3 * self.width, kernel_init=_INIT, **kw)
    self.proj = nn.Dense(self.width, kernel_init=nn.initializers.normal(self.out_init_scale),
                         **kw)

  def _qkv(self, x: Array) -> tuple[Array, Array, Array]:
    q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
    return _heads(q, self.num_heads), _heads(k, self.num_heads), _heads(v, self.num_heads)

  def __call__(self, x: Array) -> tuple[Array, tuple[Array, Array]]:
    """``x`` [B, S, C] -> (output [B, S, C], (keys, values) [B, S, heads, d])."""
    q, k, v = self._qkv(x)
    out = _attend(q, k, v, mask=None, causal=True)
    return self.proj(out.reshape(x.shape)), (k, v)

  def decode(self, x: Array, cache: dict[str, Array], pos: Array
             ) -> tuple[Array, dict[str, Array]]:
    """One position: ``x`` [B, 1, C] at sequence position ``pos`` (int32 scalar).

    Writes its key and value at ``pos`` of ``cache`` ({"k", "v"}: [B, L, heads, d]) and
    attends to positions ``0..pos``.
    """
    q, k, v = self._qkv(x)
    start = (0, pos, 0, 0)
    keys = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), start)
    values = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), start)
    mask = (jnp.arange(keys.shape[1]) <= pos)[None, None, None, :]
    out = _attend(q, keys, values, mask=mask, causal=False)
    return self.proj(out.reshape(x.shape)), {"k": keys, "v": values}


class Block(nn.Module):
  """Pre-LayerNorm transformer block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``.

  The MLP is ``Dense(mlp_ratio C) -> GELU -> Dense(C)``; dropout (``train`` only, 'dropout'
  rngs) on each residual branch.
  """

  width: int
  num_heads: int
  mlp_ratio: int = 4
  dropout: float = 0.0
  out_init_scale: float = 0.02
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.ln1 = nn.LayerNorm(**kw)
    self.attn = CausalSelfAttention(self.width, self.num_heads, self.out_init_scale, **kw)
    self.ln2 = nn.LayerNorm(**kw)
    self.fc1 = nn.Dense(self.mlp_ratio * self.width, kernel_init=_INIT, **kw)
    self.fc2 = nn.Dense(self.width, kernel_init=nn.initializers.normal(self.out_init_scale),
                        **kw)
    self.drop = nn.Dropout(self.dropout)

  def _mlp(self, x: Array, train: bool) -> Array:
    h = self.fc2(nn.gelu(self.fc1(self.ln2(x))))
    return x + self.drop(h, deterministic=not train)

  def __call__(self, x: Array, *, train: bool = False
               ) -> tuple[Array, tuple[Array, Array]]:
    h, kv = self.attn(self.ln1(x))
    x = x + self.drop(h, deterministic=not train)
    return self._mlp(x, train), kv

  def decode(self, x: Array, cache: dict[str, Array], pos: Array
             ) -> tuple[Array, dict[str, Array]]:
    h, cache = self.attn.decode(self.ln1(x), cache, pos)
    return self._mlp(x + h, False), cache


class Transformer(nn.Module):
  """Decoder-only transformer over sequences of ``seq_len`` tokens (see the module docstring).

  Attributes:
    vocab_size: tokens 0..vocab_size-1 (the codebook size K of a VQ prior).
    seq_len: tokens per sequence N (a code map's r * r, raster order).
    width: model width C.
    depth: number of blocks.
    num_heads: attention heads per block.
    mlp_ratio: MLP hidden width / C.
    dropout: residual and embedding dropout rate (``train`` only).
    num_classes: > 0: the start token is the embedding of ``label`` (class conditioning).
    context_len: > 0: ``context`` [B, context_len, D] is projected to C and prepended.
    dtype: compute dtype (attention softmax and logits are float32).
    param_dtype: parameter dtype.
  """

  vocab_size: int
  seq_len: int
  width: int = 256
  depth: int = 4
  num_heads: int = 4
  mlp_ratio: int = 4
  dropout: float = 0.0
  num_classes: int = 0
  context_len: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @property
  def num_prefix(self) -> int:
    """P: the context positions and the start (class) token."""
    return self.context_len + 1

  @property
  def max_len(self) -> int:
    """Positions the network ever sees: P + seq_len - 1 (the last token is never input)."""
    return self.num_prefix + self.seq_len - 1

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.tok_embed = nn.Embed(self.vocab_size, self.width, embedding_init=_INIT, **kw)
    self.pos_embed = self.param("pos_embed", _INIT, (self.max_len, self.width),
                                self.param_dtype)
    if self.num_classes > 0:
      self.class_embed = nn.Embed(self.num_classes, self.width, embedding_init=_INIT, **kw)
    else:
      self.start = self.param("start", _INIT, (self.width,), self.param_dtype)
    if self.context_len > 0:
      self.context_proj = nn.Dense(self.width, kernel_init=_INIT, **kw)
    out_scale = 0.02 / math.sqrt(2 * self.depth)
    self.blocks = [Block(self.width, self.num_heads, self.mlp_ratio, self.dropout, out_scale,
                         **kw) for _ in range(self.depth)]
    self.ln_f = nn.LayerNorm(**kw)
    self.head = nn.Dense(self.vocab_size, kernel_init=_INIT, **kw)
    self.drop = nn.Dropout(self.dropout)

  # ------------------------------------------------------------------ inputs

  def prefix(self, batch_size: int, label: Array | None = None,
             context: Array | None = None) -> Array:
    """The P prefix vectors ``[B, P, C]``: projected context, then the start/class token.

    Raises:
      ValueError: a label or context the model needs is missing or has the wrong shape.
    """
    if self.num_classes > 0:
      if label is None or tuple(label.shape) != (batch_size,):
        got = None if label is None else tuple(label.shape)
        raise ValueError(f"this transformer is class-conditional (num_classes="
                         f"{self.num_classes}): pass label of shape ({batch_size},), got {got}")
      start = self.class_embed(label)[:, None, :]
    else:
      start = jnp.broadcast_to(self.start.astype(self.dtype), (batch_size, 1, self.width))
    if self.context_len == 0:
      return start
    if context is None or context.ndim != 3 or context.shape[:2] != (batch_size,
                                                                     self.context_len):
      got = None if context is None else tuple(context.shape)
      raise ValueError(f"this transformer takes a context prefix: pass context of shape "
                       f"({batch_size}, {self.context_len}, D), got {got}")
    return jnp.concatenate([self.context_proj(context), start], axis=1)

  def embed_tokens(self, tokens: Array) -> Array:
    """int tokens [B, T] -> [B, T, C]; float ``[B, T, vocab_size]`` (one-hot or soft tokens,
    e.g. for gradients with respect to the input) -> their mixture of embeddings."""
    if jnp.issubdtype(tokens.dtype, jnp.integer):
      return self.tok_embed(tokens)
    if tokens.shape[-1] != self.vocab_size:
      raise ValueError(f"soft tokens need a last axis of vocab_size={self.vocab_size}, got "
                       f"shape {tuple(tokens.shape)}")
    return tokens.astype(self.dtype) @ self.tok_embed.embedding.astype(self.dtype)

  def _logits(self, h: Array) -> Array:
    return self.head(self.ln_f(h)).astype(jnp.float32)

  # ------------------------------------------------------------------ full sequences

  def __call__(self, tokens: Array, *, label: Array | None = None,
               context: Array | None = None, train: bool = False) -> Array:
    """Logits ``[B, T, vocab]`` of every token given the tokens before it and the prefix.

    Args:
      tokens: int32 ``[B, T]`` with T <= seq_len (or soft tokens ``[B, T, vocab]``).
      label: int32 ``[B]`` (class-conditional models).
      context: ``[B, context_len, D]`` (models with a context prefix).
      train: dropout on.

    Returns:
      float32 logits; entry i depends on ``tokens[:, :i]`` and the prefix only.
    """
    b, t = tokens.shape[:2]
    if not 1 <= t <= self.seq_len:
      raise ValueError(f"got {t} tokens per sequence; this transformer takes 1..{self.seq_len}")
    p = self.num_prefix
    h = jnp.concatenate([self.prefix(b, label, context),
                         self.embed_tokens(tokens[:, :t - 1])], axis=1)
    h = h + self.pos_embed[:p + t - 1].astype(self.dtype)
    h = self.drop(h, deterministic=not train)
    for block in self.blocks:
      h, _ = block(h, train=train)
    return self._logits(h[:, p - 1:])

  # ------------------------------------------------------------------ cached decoding

  def prefill(self, batch_size: int, *, label: Array | None = None,
              context: Array | None = None) -> tuple[Array, Cache]:
    """Runs the prefix: ``(logits of t_0 [B, vocab], cache)``.

    The cache holds one ``{"k", "v"}`` of ``[B, max_len, heads, d]`` per block, the prefix's
    keys and values at positions ``0..P-1`` (zeros after them, never attended to).
    """
    p = self.num_prefix
    h = self.prefix(batch_size, label, context) + self.pos_embed[:p].astype(self.dtype)
    cache = []
    shape = (batch_size, self.max_len, self.num_heads, self.width // self.num_heads)
    for block in self.blocks:
      h, (k, v) = block(h, train=False)
      zeros = jnp.zeros(shape, self.dtype)
      cache.append({"k": zeros.at[:, :p].set(k), "v": zeros.at[:, :p].set(v)})
    return self._logits(h[:, -1]), cache

  def decode(self, token: Array, cache: Cache, index: Array) -> tuple[Array, Cache]:
    """Feeds token ``t_index`` (int32 [B]): ``(logits of t_{index+1} [B, vocab], cache)``.

    ``index`` (int32 scalar, 0..seq_len-2) may be traced: one compiled step serves every
    position inside a `lax.scan`.
    """
    pos = self.num_prefix + index
    h = self.tok_embed(token)[:, None, :]
    h = h + jax.lax.dynamic_slice_in_dim(self.pos_embed, pos, 1, axis=0)[None].astype(
        self.dtype)
    new_cache = []
    for block, layer_cache in zip(self.blocks, cache, strict=True):
      h, layer_cache = block.decode(h, layer_cache, pos)
      new_cache.append(layer_cache)
    return self._logits(h[:, 0]), new_cache
