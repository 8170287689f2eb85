"""The LDM / taming-transformers first-stage encoder and decoder (Esser et al. 2021; Rombach et
al. 2022), built from jgen's one residual block, attention block and resampling layers.

`LDMEncoder`: images `[B, H, W, C]` (H and W each divisible by f; not necessarily square) ->
``conv_in`` (3x3, ``ch``), then per level i ``num_res_blocks`` residual blocks of
``ch * ch_mult[i]`` channels (self-attention after each at the resolutions in
``attn_resolutions``) and, between levels, a stride-2 3x3 conv (`jgen.nn.layers.Downsample`);
a middle block residual -> self-attention -> residual; GroupNorm, swish, ``conv_out`` (3x3) to
``out_channels`` and a 1x1 ``quant_conv`` (LDM's, folded in) to ``embed_dim`` channels (None:
``out_channels``; diffusers' ``VQModel`` maps ``latent_channels`` to ``vq_embed_dim`` there).
The downsampling factor is f = 2^(len(ch_mult) - 1): ``(1, 2, 2)`` is f = 4, ``(1, 2, 2, 4)``
f = 8. A KL bottleneck asks for ``out_channels = 2 z`` (mean and log-variance), a VQ one for
the code dimension.

`LDMDecoder`: a 1x1 ``post_quant_conv`` (to ``z_channels``; None: the latent's channels),
``conv_in`` to ``ch * ch_mult[-1]``, the middle block, then per level (deepest first)
``num_res_blocks + 1`` residual blocks (attention as above) and a 2x nearest upsample + 3x3
conv (`jgen.nn.layers.Upsample`) between levels; GroupNorm, swish and ``conv_out`` (3x3) to
the image channels. ``conv_out`` is the *last layer* whose gradient norms set the adaptive GAN
weight (`LAST_LAYER`).

Residual blocks are `jgen.nn.layers.ResBlock` (GroupNorm + swish + conv3x3, twice, dropout
before the second conv, 1x1 shortcut on a width change), attention `jgen.nn.layers.AttnBlock`
(single head over all positions, zero-initialized output projection, as LDM's AttnBlock);
``mid_attention=False`` drops the middle block's attention (diffusers'
``mid_block_add_attention=False``). Attention at ``attn_resolutions`` is decided by the feature
map's height (LDM's square ``curr_res``). Both modules take a compute ``dtype`` (float32
parameters and outputs) and a keyword-only ``train`` flag (dropout).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.nn.layers import AttnBlock, Downsample, Norm, ResBlock, Upsample

Dtype = Any

__all__ = ["LAST_LAYER", "LOGVAR_RANGE", "LDMDecoder", "LDMEncoder", "downsampling_factor",
           "latent_resolution"]

LAST_LAYER = ("decoder", "conv_out", "kernel")  # path of the adaptive weight's last layer
LOGVAR_RANGE = (-30.0, 20.0)  # LDM's DiagonalGaussianDistribution clamp of the log-variance


def downsampling_factor(ch_mult: Sequence[int]) -> int:
  """f = 2^(len(ch_mult) - 1): the image side over the latent side."""
  if not ch_mult:
    raise ValueError("ch_mult needs at least one level, e.g. (1, 2, 2) for f = 4")
  return 2 ** (len(ch_mult) - 1)


def latent_resolution(image_size: int, ch_mult: Sequence[int]) -> int:
  """Latent side image_size / f, checked to be a whole number."""
  f = downsampling_factor(ch_mult)
  if image_size % f or image_size < f:
    raise ValueError(f"image size {image_size} is not divisible by the downsampling factor "
                     f"f = {f} of ch_mult={tuple(ch_mult)}; use fewer levels or another size")
  return image_size // f


def _check_groups(ch: int, ch_mult: Sequence[int], num_groups: int) -> None:
  for mult in ch_mult:
    if (ch * mult) % num_groups:
      raise ValueError(f"model.num_groups={num_groups} must divide every level's width "
                       f"ch * ch_mult = {ch} * {tuple(ch_mult)}")


class _Stack(nn.Module):
  """Shared pieces of the encoder and the decoder (widths, blocks, the middle block)."""

  ch: int = 64
  ch_mult: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = ()
  num_groups: int = 32
  dropout: float = 0.0
  mid_attention: bool = True
  dtype: Dtype = jnp.float32

  def _block(self, features: int, name: str) -> ResBlock:
    return ResBlock(features, norm="group", num_groups=self.num_groups, activation=nn.swish,
                    dropout=self.dropout, dtype=self.dtype, name=name)

  def _attn(self, name: str) -> AttnBlock:
    return AttnBlock(num_groups=self.num_groups, dtype=self.dtype, name=name)

  def _middle(self, h: jax.Array, *, train: bool) -> jax.Array:
    width = h.shape[-1]
    h = self._block(width, "mid_block_1")(h, train=train)
    if self.mid_attention:
      h = self._attn("mid_attn")(h)
    return self._block(width, "mid_block_2")(h, train=train)

  def _out(self, h: jax.Array, features: int) -> jax.Array:
    h = nn.swish(Norm("group", self.num_groups, dtype=self.dtype, name="norm_out")(h))
    return nn.Conv(features, (3, 3), dtype=self.dtype, name="conv_out")(h)


class LDMEncoder(_Stack):
  """Images `[B, H, W, C]` -> latents `[B, H/f, W/f, embed_dim or out_channels]` (see the
  module docstring).

  Attributes:
    out_channels: channels of ``conv_out`` (2 z for a KL bottleneck's mean and log-variance).
    embed_dim: channels of ``quant_conv``'s output; None: ``out_channels``.
    ch, ch_mult, num_res_blocks, attn_resolutions, num_groups, dropout, mid_attention, dtype:
      the widths (``ch * ch_mult[i]`` at level i), blocks per level, resolutions with attention
      after each block, GroupNorm groups, dropout rate, the middle block's attention and the
      compute dtype.
  """

  out_channels: int = 8
  embed_dim: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"LDMEncoder takes images [B, H, W, C], got shape {x.shape}")
    latent_resolution(x.shape[1], self.ch_mult)
    latent_resolution(x.shape[2], self.ch_mult)
    _check_groups(self.ch, self.ch_mult, self.num_groups)
    h = nn.Conv(self.ch * self.ch_mult[0], (3, 3), dtype=self.dtype, name="conv_in")(
        x.astype(self.dtype))
    for i, mult in enumerate(self.ch_mult):
      for j in range(self.num_res_blocks):
        h = self._block(self.ch * mult, f"down_{i}_block_{j}")(h, train=train)
        if h.shape[1] in self.attn_resolutions:
          h = self._attn(f"down_{i}_attn_{j}")(h)
      if i + 1 < len(self.ch_mult):
        h = Downsample(with_conv=True, dtype=self.dtype, name=f"down_{i}_downsample")(h)
    h = self._middle(h, train=train)
    h = self._out(h, self.out_channels)
    embed_dim = self.out_channels if self.embed_dim is None else self.embed_dim
    h = nn.Conv(embed_dim, (1, 1), dtype=self.dtype, name="quant_conv")(h)
    return h.astype(jnp.float32)


class LDMDecoder(_Stack):
  """Latents `[B, h, w, z]` -> images `[B, h f, w f, out_channels]` (see the module docstring).

  Attributes:
    out_channels: image channels.
    z_channels: channels of ``post_quant_conv``'s output; None: the latent's channels.
    ch, ch_mult, num_res_blocks, attn_resolutions, num_groups, dropout, mid_attention, dtype:
      as in `LDMEncoder` (the decoder has one more block per level, as LDM's).
  """

  out_channels: int = 3
  z_channels: int | None = None

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool) -> jax.Array:
    if z.ndim != 4:
      raise ValueError(f"LDMDecoder takes latent maps [B, h, w, z], got shape {z.shape}")
    _check_groups(self.ch, self.ch_mult, self.num_groups)
    z = z.astype(self.dtype)
    z_channels = z.shape[-1] if self.z_channels is None else self.z_channels
    h = nn.Conv(z_channels, (1, 1), dtype=self.dtype, name="post_quant_conv")(z)
    h = nn.Conv(self.ch * self.ch_mult[-1], (3, 3), dtype=self.dtype, name="conv_in")(h)
    h = self._middle(h, train=train)
    for i in reversed(range(len(self.ch_mult))):
      for j in range(self.num_res_blocks + 1):
        h = self._block(self.ch * self.ch_mult[i], f"up_{i}_block_{j}")(h, train=train)
        if h.shape[1] in self.attn_resolutions:
          h = self._attn(f"up_{i}_attn_{j}")(h)
      if i > 0:
        h = Upsample(with_conv=True, dtype=self.dtype, name=f"up_{i}_upsample")(h)
    return self._out(h, self.out_channels).astype(jnp.float32)
