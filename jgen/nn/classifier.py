"""A noise-aware classifier p(y | x_t, t) for classifier guidance (Dhariwal & Nichol, 2021).

The downsampling half of the DDPM U-Net (`jgen.nn.unet.UNet`) and its middle blocks, with the
same sinusoidal timestep-embedding MLP, followed by group norm, swish, global average pooling
and a dense head to ``num_classes`` logits: guided-diffusion's ``EncoderUNetModel`` with
``pool="adaptive"``. The submodules carry the U-Net's names (``temb_dense0``, ``conv_in``,
``down_{level}_block_{block}``, ``mid_block_1`` ...), so a classifier can start from a trained
U-Net's encoder with `jgen.train.init_from` (``match`` over those paths).
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
    ddpm_conv,
    ddpm_dense,
    ddpm_res_block,
    timestep_embedding,
)

Array = jax.Array
Dtype = Any

__all__ = ["NoisyClassifier"]


class NoisyClassifier(nn.Module):
  """Logits of p(y | x_t, t) from noisy images and their timesteps.

  Every example is processed independently (group norm, no batch statistics), so the gradient
  of the summed log-probabilities with respect to the batch is the per-example gradient that
  classifier guidance needs.

  Attributes:
    ch: Base channel count.
    ch_mult: Channel multiplier per resolution level (a 2x downsample between levels).
    num_res_blocks: Residual blocks per level.
    attn_resolutions: Feature-map heights at which a self-attention block follows each
      residual block (the middle always has one).
    num_classes: Number of output logits.
    dropout: Dropout rate of the residual blocks.
    num_groups: Groups of every group normalisation.
    resamp_with_conv: Downsample with a strided convolution (else average pooling).
    dtype: Compute dtype. The logits are always float32.
    param_dtype: Parameter dtype.
  """

  ch: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  num_classes: int = 10
  dropout: float = 0.0
  num_groups: int = 32
  resamp_with_conv: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _check_inputs(self, x: Array, t: Array) -> None:
    """Raises ValueError on inputs the network cannot process."""
    if self.num_classes < 1:
      raise ValueError(f"num_classes must be >= 1, got {self.num_classes}.")
    if x.ndim != 4:
      raise ValueError(f"x must have shape [B, H, W, C] (NHWC), got shape {x.shape}.")
    if t.shape != (x.shape[0],):
      raise ValueError(f"t must have shape [B]=({x.shape[0]},), got shape {t.shape}.")
    factor = 2**(len(self.ch_mult) - 1)
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f"H and W must be divisible by 2**(len(ch_mult)-1)={factor} for "
                       f"ch_mult={tuple(self.ch_mult)}, got H={x.shape[1]}, W={x.shape[2]}.")

  @nn.compact
  def __call__(self, x: Array, t: Array, *, train: bool) -> Array:
    """Classifies noisy images.

    Args:
      x: Noisy images ``[B, H, W, C]`` (x_t of the diffusion process).
      t: Timesteps ``[B]``, integer or floating point.
      train: Enables dropout (needs a ``'dropout'`` rng) when True.

    Returns:
      float32 logits ``[B, num_classes]``.

    Raises:
      ValueError: If the input shapes are invalid.
    """
    x = jnp.asarray(x)
    t = jnp.asarray(t)
    self._check_inputs(x, t)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    attn_res = tuple(self.attn_resolutions)

    def res_block(features: int, name: str):
      return ddpm_res_block(features, dropout=self.dropout, num_groups=self.num_groups,
                            name=name, **kw)

    temb = timestep_embedding(t, self.ch)
    temb = ddpm_dense(4 * self.ch, name="temb_dense0", **kw)(temb)
    temb = nn.swish(temb)
    temb = ddpm_dense(4 * self.ch, name="temb_dense1", **kw)(temb)

    h = ddpm_conv(self.ch, 3, name="conv_in", **kw)(x.astype(self.dtype))
    for level, mult in enumerate(self.ch_mult):
      for block in range(self.num_res_blocks):
        prefix = f"down_{level}_block_{block}"
        h = res_block(self.ch * mult, prefix)(h, temb, train=train)
        if h.shape[1] in attn_res:
          h = AttnBlock(num_groups=self.num_groups, name=f"{prefix}_attn", **kw)(h)
      if level != len(self.ch_mult) - 1:
        h = Downsample(with_conv=self.resamp_with_conv, name=f"down_{level}_downsample",
                       **kw)(h)

    mid_ch = h.shape[-1]
    h = res_block(mid_ch, "mid_block_1")(h, temb, train=train)
    h = AttnBlock(num_groups=self.num_groups, name="mid_attn_1", **kw)(h)
    h = res_block(mid_ch, "mid_block_2")(h, temb, train=train)

    h = nn.swish(Norm("group", self.num_groups, name="norm_out", **kw)(h))
    h = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
    logits = ddpm_dense(self.num_classes, init_scale=0.0, name="head", **kw)(h)
    return logits.astype(jnp.float32)
