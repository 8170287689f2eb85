"""The convolutional encoder/decoder family shared by AE, denoising AE, VAE and VQ-VAE.

`Encoder` maps images `[B, H, W, C]` to a latent: a vector `[B, out_features]` or, with
`spatial=True`, a map `[B, H / 2^L, W / 2^L, out_features]` where `L = len(ch_mult) - 1`.
`Decoder` mirrors it back to `[B, H, W, out_channels]`. Both take any power-of-two image size
(at least 2^L), any number of channels, a compute `dtype` (float32 params; outputs are float32)
and a keyword-only `train` flag (dropout in the residual blocks, `jgen.nn.layers.ResBlock` with
group norm and SiLU).

Encoder and decoder are separate modules so a method can put a quantizer, a sampler or a
posterior between them; `init_encoder_decoder` builds their joint parameter tree
`{'encoder': ..., 'decoder': ...}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.nn.layers import Norm, ResBlock, upsample_nearest

Dtype = Any
PyTree = Any

__all__ = ["Decoder", "Encoder", "check_image_size", "init_encoder_decoder",
           "latent_resolution", "latent_shape"]


def check_image_size(image_size: int, num_levels: int) -> None:
  """Raises ValueError unless `image_size` is a power of two divisible by 2^(num_levels-1)."""
  if image_size <= 0 or image_size & (image_size - 1):
    raise ValueError(f"image size must be a power of two, got {image_size}")
  if image_size < 2 ** (num_levels - 1):
    raise ValueError(f"image size {image_size} is too small for {num_levels} levels "
                     f"(ch_mult of length {num_levels} halves it {num_levels - 1} times)")


def latent_resolution(image_size: int, ch_mult: Sequence[int]) -> int:
  """Side of the encoder's last feature map: image_size / 2^(len(ch_mult) - 1)."""
  check_image_size(image_size, len(ch_mult))
  return image_size // 2 ** (len(ch_mult) - 1)


def _norm(num_groups: int, dtype: Dtype) -> Norm:
  """GroupNorm with `num_groups` groups (0: no normalization)."""
  return Norm("group" if num_groups > 0 else "none", max(num_groups, 1), dtype=dtype)


def _res_block(features: int, num_groups: int, dropout: float, dtype: Dtype) -> ResBlock:
  """Pre-activation block: (norm, SiLU, conv3x3) x 2, dropout before the second conv (scaled
  down at init: variance scaling 0.1), 1x1 shortcut on a width change."""
  return ResBlock(features, norm="group" if num_groups > 0 else "none",
                  num_groups=max(num_groups, 1), activation=nn.silu, dropout=dropout,
                  out_kernel_init=nn.initializers.variance_scaling(0.1, "fan_avg", "uniform"),
                  dtype=dtype)


class Encoder(nn.Module):
  """Convolutional encoder: stem, then per level residual blocks and a stride-2 downsample.

  Attributes:
    ch: base width; level i has `ch * ch_mult[i]` channels.
    ch_mult: width multipliers, one per level; the image is halved between levels.
    num_res_blocks: residual blocks per level.
    out_features: latent size (vector) or latent channels (spatial).
    spatial: latent as a map (1x1 conv head) instead of a vector (dense head).
    num_groups: GroupNorm groups (0: none).
    dropout: dropout rate in the residual blocks.
    dtype: compute dtype.
  """

  ch: int = 32
  ch_mult: Sequence[int] = (1, 2)
  num_res_blocks: int = 1
  out_features: int = 16
  spatial: bool = False
  num_groups: int = 0
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if x.shape[1] != x.shape[2]:
      raise ValueError(f"images must be square, got {x.shape[1]}x{x.shape[2]}")
    check_image_size(x.shape[1], len(self.ch_mult))
    h = nn.Conv(self.ch * self.ch_mult[0], (3, 3), dtype=self.dtype)(x.astype(self.dtype))
    for i, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = _res_block(self.ch * mult, self.num_groups, self.dropout, self.dtype)(
            h, train=train)
      if i + 1 < len(self.ch_mult):
        h = nn.Conv(self.ch * self.ch_mult[i + 1], (3, 3), strides=(2, 2), dtype=self.dtype)(h)
    h = nn.silu(_norm(min(self.num_groups, h.shape[-1]), self.dtype)(h))
    if self.spatial:
      out = nn.Conv(self.out_features, (1, 1), dtype=self.dtype)(h)
    else:
      out = nn.Dense(self.out_features, dtype=self.dtype)(h.reshape(h.shape[0], -1))
    return out.astype(jnp.float32)


class Decoder(nn.Module):
  """Mirror of `Encoder`: latent -> per level residual blocks and a 2x nearest upsample.

  Attributes:
    image_size: output height and width (a power of two).
    out_channels: output channels (e.g. C for a mean or logits, 2C for mean and log-scale).
    ch, ch_mult, num_res_blocks, num_groups, dropout, dtype: as in `Encoder`.
    spatial: the latent is a map `[B, r, r, D]` (r = image_size / 2^(len(ch_mult)-1)),
      else a vector `[B, D]` (a dense layer makes the first map).
  """

  image_size: int
  out_channels: int
  ch: int = 32
  ch_mult: Sequence[int] = (1, 2)
  num_res_blocks: int = 1
  spatial: bool = False
  num_groups: int = 0
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool) -> jax.Array:
    r = latent_resolution(self.image_size, self.ch_mult)
    width = self.ch * self.ch_mult[-1]
    z = z.astype(self.dtype)
    if self.spatial:
      if z.shape[1:3] != (r, r):
        raise ValueError(f"latent map must be {r}x{r}, got {z.shape[1]}x{z.shape[2]}")
      h = nn.Conv(width, (3, 3), dtype=self.dtype)(z)
    else:
      h = nn.Dense(r * r * width, dtype=self.dtype)(z).reshape(z.shape[0], r, r, width)
    for i in reversed(range(len(self.ch_mult))):
      for _ in range(self.num_res_blocks):
        h = _res_block(self.ch * self.ch_mult[i], self.num_groups, self.dropout,
                       self.dtype)(h, train=train)
      if i > 0:
        h = upsample_nearest(h)
        h = nn.Conv(self.ch * self.ch_mult[i - 1], (3, 3), dtype=self.dtype)(h)
    h = nn.silu(_norm(min(self.num_groups, h.shape[-1]), self.dtype)(h))
    return nn.Conv(self.out_channels, (3, 3), dtype=self.dtype)(h).astype(jnp.float32)


def latent_shape(encoder: Encoder, image_size: int) -> tuple[int, ...]:
  """Shape of one image's latent: `(r, r, out_features)` if spatial, else `(out_features,)`."""
  if encoder.spatial:
    r = latent_resolution(image_size, encoder.ch_mult)
    return (r, r, encoder.out_features)
  return (encoder.out_features,)


def init_encoder_decoder(rng: jax.Array, encoder: Encoder, decoder: Decoder, x: jax.Array,
                         z: jax.Array) -> PyTree:
  """Parameters `{'encoder': ..., 'decoder': ...}` from example images `x` and latents `z`."""
  enc_rng, dec_rng = jax.random.split(rng)
  return {"encoder": encoder.init(enc_rng, x, train=False)["params"],
          "decoder": decoder.init(dec_rng, z, train=False)["params"]}
