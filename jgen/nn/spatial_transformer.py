"""Stable Diffusion's attention block: a transformer over the positions of a feature map.

Latent diffusion's ``SpatialTransformer`` (Rombach et al. 2022; diffusers' ``Transformer2DModel``
with ``BasicTransformerBlock``), on ``x`` ``[B, H, W, C]`` and a context ``c`` ``[B, L, D]``:

    h = proj_in(GroupNorm(x))                       reshaped to [B, H W, C]
    for each of `depth` blocks:
      h = h + Attn(LN1(h))                          self-attention, multi-head
      h = h + Attn(LN2(h), c)                       cross-attention to the context
      h = h + W_2 (a * gelu(g)),  [a, g] = W_1 LN3(h)   GEGLU feed-forward, inner width 4 C
    out = x + proj_out(h)                           reshaped back to [B, H, W, C]

Attention is ``softmax(q k^T / sqrt(d)) v`` per head (``d = C / heads``) with q, k and v
projections without bias and an output projection with bias; logits and softmax are float32 (so
SD 2.1's ``upcast_attention`` is always on). The GroupNorm has epsilon 1e-6, the LayerNorms 1e-5
(torch's default; flax's is 1e-6), the gelu is exact (erf). ``proj_in`` / ``proj_out`` are
Dense layers over channels: SD 1.x stores them as 1x1 convolutions and SD 2.x as Linear layers
(``use_linear_projection``), the same map (before or after the reshape), so one module serves
both and only the converter sees the difference.

The output projection starts at zero, so a new block is the identity, as the U-Net's other
residual branches (`jgen.nn.layers.default_init(0)`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.nn.layers import Norm, _attend, default_init

Array = jax.Array
Dtype = Any

__all__ = ["MultiHeadAttention", "SpatialTransformer", "TransformerBlock"]


class MultiHeadAttention(nn.Module):
  """Multi-head attention from ``x`` [B, N, C] to ``context`` [B, L, D] (self: context = x).

  Parameters: ``to_q`` [C, C], ``to_k`` and ``to_v`` [D, C] (no bias), ``to_out`` [C, C] + bias.

  Attributes:
    num_heads: heads; must divide C.
    dtype: compute dtype (logits and softmax in float32).
    param_dtype: parameter dtype.
  """

  num_heads: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, context: Array | None = None) -> Array:
    b, n, c = x.shape
    if c % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide the channel count {c}")
    context = x if context is None else context.astype(self.dtype)
    heads, d = self.num_heads, c // self.num_heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=default_init(1.0))
    q = nn.Dense(c, use_bias=False, name="to_q", **kw)(x).reshape(b, n, heads, d)
    k = nn.Dense(c, use_bias=False, name="to_k", **kw)(context).reshape(b, -1, heads, d)
    v = nn.Dense(c, use_bias=False, name="to_v", **kw)(context).reshape(b, -1, heads, d)
    h = _attend(q, k, v, self.dtype).reshape(b, n, c)
    return nn.Dense(c, name="to_out", **kw)(h)


class TransformerBlock(nn.Module):
  """Self-attention, cross-attention and a GEGLU feed-forward, each pre-LayerNorm, residual.

  Attributes:
    num_heads: attention heads.
    ff_mult: inner width of the feed-forward over C (4).
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  num_heads: int
  ff_mult: int = 4
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: Array, context: Array) -> Array:
    c = h.shape[-1]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    ln = lambda name: nn.LayerNorm(epsilon=1e-5, name=name, **kw)
    h = h + MultiHeadAttention(self.num_heads, name="attn1", **kw)(ln("norm1")(h))
    h = h + MultiHeadAttention(self.num_heads, name="attn2", **kw)(ln("norm2")(h), context)
    a, g = jnp.split(nn.Dense(2 * self.ff_mult * c, kernel_init=default_init(1.0),
                              name="ff_proj", **kw)(ln("norm3")(h)), 2, axis=-1)
    return h + nn.Dense(c, kernel_init=default_init(1.0), name="ff_out", **kw)(
        a * nn.gelu(g, approximate=False))


class SpatialTransformer(nn.Module):
  """The U-Net's transformer block over ``x`` [B, H, W, C] with a context [B, L, D].

  Attributes:
    num_heads: attention heads (SD 1.x: 8 everywhere; SD 2.x: C / 64).
    depth: transformer blocks (diffusers' ``transformer_layers_per_block``; 1 in SD 1.x/2.x).
    num_groups: groups of the input GroupNorm.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  num_heads: int
  depth: int = 1
  num_groups: int = 32
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, context: Array) -> Array:
    """``x + proj_out(blocks(proj_in(GroupNorm(x)), context))``, shaped as ``x``.

    Raises:
      ValueError: ``context`` is not ``[B, L, D]`` with the batch size of ``x``.
    """
    x = x.astype(self.dtype)
    b, hgt, wid, c = x.shape
    if context.ndim != 3 or context.shape[0] != b:
      raise ValueError(f"context must have shape [B, L, D] with B={b}, got shape "
                       f"{context.shape}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = Norm("group", self.num_groups, epsilon=1e-6, name="norm", **kw)(x)
    h = nn.Dense(c, kernel_init=default_init(1.0), name="proj_in", **kw)(h)
    h = h.reshape(b, hgt * wid, c)
    for i in range(self.depth):
      h = TransformerBlock(self.num_heads, name=f"block_{i}", **kw)(h, context)
    h = nn.Dense(c, kernel_init=default_init(0.0), name="proj_out", **kw)(h)
    return x + h.reshape(b, hgt, wid, c)
