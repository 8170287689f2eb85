"""The DDPM U-Net noise-prediction network (Ho et al., 2020).

Follows the official CIFAR-10 model: with ``ch=128, ch_mult=(1, 2, 2, 2),
num_res_blocks=2, attn_resolutions=(16,)`` on 32x32x3 inputs it has
35,746,307 parameters.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.nn.layers import (
    AttnBlock,
    Downsample,
    Norm,
    ResBlock,
    Upsample,
    ddpm_conv,
    ddpm_dense,
    ddpm_res_block,
    timestep_embedding,
)

Array = jax.Array
Dtype = Any

__all__ = ["UNet"]


class UNet(nn.Module):
  """DDPM U-Net predicting the noise ``eps`` from ``(x_t, t)``.

  Attention is applied after a residual block whenever the current feature
  map height is in ``attn_resolutions``.

  Attributes:
    ch: Base channel count.
    ch_mult: Channel multiplier per resolution level.
    num_res_blocks: Residual blocks per level on the down path (the up
      path uses one more).
    attn_resolutions: Feature-map heights at which to apply attention.
    dropout: Dropout rate of the residual blocks.
    num_groups: Groups of every group normalisation.
    out_ch: Output channels; ``None`` means the input channel count.
    resamp_with_conv: Use convolutions when down/upsampling.
    dtype: Compute dtype. The output is always float32.
    param_dtype: Parameter dtype.
  """

  ch: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  num_groups: int = 32
  out_ch: int | None = None
  resamp_with_conv: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _check_inputs(self, x: Array, t: Array) -> None:
    """Raises ValueError on inputs the network cannot process."""
    if x.ndim != 4:
      raise ValueError(f"x must have shape [B, H, W, C] (NHWC), got shape {x.shape}.")
    if t.shape != (x.shape[0],):
      raise ValueError(f"t must have shape [B]=({x.shape[0]},), got shape {t.shape}.")
    factor = 2**(len(self.ch_mult) - 1)
    height, width = x.shape[1], x.shape[2]
    if height % factor or width % factor:
      raise ValueError(f"H and W must be divisible by 2**(len(ch_mult)-1)={factor} "
                       f"for ch_mult={tuple(self.ch_mult)}, got H={height}, "
                       f"W={width}.")

  @nn.compact
  def __call__(self, x: Array, t: Array, *, train: bool) -> Array:
    """Predicts the noise.

    Args:
      x: Noisy images ``[B, H, W, C]``.
      t: Timesteps ``[B]``, integer or floating point.
      train: Enables dropout (needs a ``'dropout'`` rng) when True.

    Returns:
      A float32 array of shape ``[B, H, W, out_ch or C]``.

    Raises:
      ValueError: If the input shapes are invalid.
    """
    x = jnp.asarray(x)
    t = jnp.asarray(t)
    self._check_inputs(x, t)
    out_ch = self.out_ch if self.out_ch is not None else x.shape[-1]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    attn_res = tuple(self.attn_resolutions)
    num_levels = len(self.ch_mult)

    def res_block(features: int, name: str) -> ResBlock:
      return ddpm_res_block(features, dropout=self.dropout, num_groups=self.num_groups,
                            name=name, **kw)

    def attn_block(name: str) -> AttnBlock:
      return AttnBlock(num_groups=self.num_groups, name=name, **kw)

    temb = timestep_embedding(t, self.ch)
    temb = ddpm_dense(4 * self.ch, name="temb_dense0", **kw)(temb)
    temb = nn.swish(temb)
    temb = ddpm_dense(4 * self.ch, name="temb_dense1", **kw)(temb)

    h = ddpm_conv(self.ch, 3, name="conv_in", **kw)(x.astype(self.dtype))
    hs = [h]
    for level, mult in enumerate(self.ch_mult):
      for block in range(self.num_res_blocks):
        prefix = f"down_{level}_block_{block}"
        block_fn = res_block(self.ch * mult, prefix)
        h = block_fn(hs[-1], temb, train=train)
        if h.shape[1] in attn_res:
          h = attn_block(f"{prefix}_attn")(h)
        hs.append(h)
      if level != num_levels - 1:
        down = Downsample(
            with_conv=self.resamp_with_conv,
            name=f"down_{level}_downsample",
            **kw,
        )
        hs.append(down(hs[-1]))

    h = hs[-1]
    mid_ch = h.shape[-1]
    h = res_block(mid_ch, "mid_block_1")(h, temb, train=train)
    h = attn_block("mid_attn_1")(h)
    h = res_block(mid_ch, "mid_block_2")(h, temb, train=train)

    for level in reversed(range(num_levels)):
      for block in range(self.num_res_blocks + 1):
        prefix = f"up_{level}_block_{block}"
        h = jnp.concatenate([h, hs.pop()], axis=-1)
        h = res_block(self.ch * self.ch_mult[level], prefix)(h, temb, train=train)
        if h.shape[1] in attn_res:
          h = attn_block(f"{prefix}_attn")(h)
      if level != 0:
        up = Upsample(
            with_conv=self.resamp_with_conv,
            name=f"up_{level}_upsample",
            **kw,
        )
        h = up(h)

    h = nn.swish(Norm("group", self.num_groups, name="norm_out", **kw)(h))
    h = ddpm_conv(out_ch, 3, init_scale=0.0, name="conv_out", **kw)(h)
    return h.astype(jnp.float32)
