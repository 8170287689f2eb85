"""StarGAN's networks (Choi et al. 2018, appendix table 4 and the official code).

Generator `G(x, c, *, train) -> y`: the target domain c in {0, 1}^K (float `[B, K]`) is tiled
to K constant planes and concatenated to the image's channels, then

    conv 7x7 s1 p3 (ngf)                  + IN + ReLU
    n_down x [conv 4x4 s2 p1 (x2 ch)      + IN + ReLU]           (2 in the paper)
    n_blocks x residual [conv 3x3 + IN + ReLU + conv 3x3 + IN]  (6 in the paper)
    n_down x [deconv 4x4 s2 p1 (/2 ch)    + IN + ReLU]
    conv 7x7 s1 p3 (out_channels)         + tanh

with zero padding and instance norm with a learned scale and bias (the paper's
`InstanceNorm2d(affine=True)`); statistics are always the example's own, in training and at
inference (the official code also tracks running statistics, but its test mode never switches
to them), so G has no `model_state`. No bias before a norm (it would be cancelled).

The encoder's features (the image, the stem and every downsampling and residual block's output)
are sown into the `ENCODER_COLLECTION` collection for content losses on them (PatchNCE,
`jgen.gan.patch_nce`); they are no parameters, so the tree is that of the paper's G.

Discriminator `D(x, *, train) -> (src [B, h, w], cls [B, K])`: PatchGAN

    n_layers x [conv 4x4 s2 p1 (ndf, 2 ndf, 4 ndf, ...) + LeakyReLU(0.01)]   (6 in the paper)
    src: conv 3x3 s1 p1 (1)           -> per-patch real/fake scores (2x2 at 128 px)
    cls: conv (S / 2^n_layers)^2 valid (K) -> one logit per attribute

with no normalization (the WGAN-GP penalty needs every example scored on its own). At 128 px
with ngf = ndf = 64 these are the paper's networks.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any

__all__ = ["ENCODER_COLLECTION", "StarGANDiscriminator", "StarGANGenerator", "encoder_layers",
           "tile_domain"]

# The collection G sows its encoder's features into (read with `mutable=[...]`; a no-op
# otherwise): "input" (the image), "stem", "down_1".."down_n", "block_1".."block_m".
ENCODER_COLLECTION = "encoder"


def encoder_layers(n_down: int, n_blocks: int) -> tuple[str, ...]:
  """Names of the encoder features `StarGANGenerator` sows, input first."""
  return ("input", "stem", *(f"down_{i + 1}" for i in range(n_down)),
          *(f"block_{i + 1}" for i in range(n_blocks)))


def tile_domain(x: Array, c: Array) -> Array:
  """`[B, H, W, C]`, `[B, K]` -> `[B, H, W, C + K]`: c as K constant planes after x."""
  if c.ndim != 2 or c.shape[0] != x.shape[0]:
    raise ValueError(f"the domain vector must be [B, K] with B = {x.shape[0]}, got "
                     f"{tuple(c.shape)}")
  planes = jnp.broadcast_to(c[:, None, None, :].astype(x.dtype), (*x.shape[:3], c.shape[-1]))
  return jnp.concatenate([x, planes], axis=-1)


def _pad(p: int):
  return ((p, p), (p, p))


class _ConvNormReLU(nn.Module):
  features: int
  kernel: int
  stride: int
  padding: int
  transpose: bool = False
  relu: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.transpose:  # PyTorch ConvTranspose2d(k, s, p) = lax padding k - 1 - p per side
      x = nn.ConvTranspose(self.features, (self.kernel, self.kernel),
                           (self.stride, self.stride), padding=_pad(self.kernel - 1 -
                                                                    self.padding),
                           use_bias=False, dtype=self.dtype)(x)
    else:
      x = nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride),
                  padding=_pad(self.padding), use_bias=False, dtype=self.dtype)(x)
    x = nn.InstanceNorm(epsilon=1e-5, dtype=self.dtype)(x)
    return nn.relu(x) if self.relu else x


class StarGANGenerator(nn.Module):
  """G(x, c): x `[B, H, W, C]` in [-1, 1] and c `[B, K]` -> `[B, H, W, out_channels]` (tanh).

  Attributes:
    out_channels: image channels out (3 RGB, 1 gray).
    ngf: features of the first layer (64 in the paper); doubled by every downsampling.
    n_down: stride-2 downsamplings (and as many upsamplings); H, W divisible by 2^n_down.
    n_blocks: residual blocks at the bottleneck (6 in the paper).
    dtype: compute dtype.
  """

  out_channels: int
  ngf: int = 64
  n_down: int = 2
  n_blocks: int = 6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, c: Array, *, train: bool = False) -> Array:
    del train  # instance norm uses the example's own statistics in both modes
    if x.shape[1] % 2 ** self.n_down or x.shape[2] % 2 ** self.n_down:
      raise ValueError(f"StarGANGenerator with n_down={self.n_down} needs H and W divisible "
                       f"by {2 ** self.n_down}, got {x.shape[1]} x {x.shape[2]}")
    self.sow(ENCODER_COLLECTION, "input", x)
    h = tile_domain(x, c).astype(self.dtype)
    h = _ConvNormReLU(self.ngf, 7, 1, 3, dtype=self.dtype)(h)
    self.sow(ENCODER_COLLECTION, "stem", h)
    ch = self.ngf
    for i in range(self.n_down):
      ch *= 2
      h = _ConvNormReLU(ch, 4, 2, 1, dtype=self.dtype)(h)
      self.sow(ENCODER_COLLECTION, f"down_{i + 1}", h)
    for i in range(self.n_blocks):
      r = _ConvNormReLU(ch, 3, 1, 1, dtype=self.dtype)(h)
      h = h + _ConvNormReLU(ch, 3, 1, 1, relu=False, dtype=self.dtype)(r)
      self.sow(ENCODER_COLLECTION, f"block_{i + 1}", h)
    for _ in range(self.n_down):
      ch //= 2
      h = _ConvNormReLU(ch, 4, 2, 1, transpose=True, dtype=self.dtype)(h)
    h = nn.Conv(self.out_channels, (7, 7), padding=_pad(3), use_bias=False,
                dtype=self.dtype)(h)
    return jnp.tanh(h).astype(jnp.float32)


class StarGANDiscriminator(nn.Module):
  """D(x) -> (per-patch source scores `[B, h, w]`, attribute logits `[B, K]`).

  Attributes:
    num_attributes: K, the domain-classification head's logits.
    ndf: features of the first layer (64 in the paper), doubled by each later layer.
    n_layers: stride-2 convolutions (6 at 128 px); the image side must be divisible by
      2^n_layers, whose quotient is the class head's kernel size.
    dtype: compute dtype.
  """

  num_attributes: int
  ndf: int = 64
  n_layers: int = 6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool = False) -> tuple[Array, Array]:
    del train  # no normalization, no dropout
    side = x.shape[1]
    if x.shape[1] != x.shape[2] or side % 2 ** self.n_layers:
      raise ValueError(f"StarGANDiscriminator with n_layers={self.n_layers} needs square "
                       f"images with a side divisible by {2 ** self.n_layers}, got "
                       f"{x.shape[1]} x {x.shape[2]}")
    h = x.astype(self.dtype)
    for i in range(self.n_layers):
      h = nn.Conv(self.ndf * 2 ** i, (4, 4), (2, 2), padding=_pad(1), dtype=self.dtype)(h)
      h = nn.leaky_relu(h, 0.01)
    src = nn.Conv(1, (3, 3), padding=_pad(1), use_bias=False, dtype=self.dtype,
                  name="src")(h)
    k = side // 2 ** self.n_layers
    cls = nn.Conv(self.num_attributes, (k, k), padding="VALID", use_bias=False,
                  dtype=self.dtype, name="cls")(h)
    return src[..., 0].astype(jnp.float32), cls.reshape(x.shape[0], -1).astype(jnp.float32)
