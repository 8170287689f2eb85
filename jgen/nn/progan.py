"""Progressive GAN networks (Karras et al. 2018): equalized learning rate, pixelwise feature
normalization, minibatch standard deviation, and the growing generator and discriminator.

Levels: level l works at resolution 4 * 2^l (level 0 is 4x4; a target of T has
L = log2(T) - 1 levels) with `features[l]` channels. Every parameter of every level exists from
initialization (`init_all`), so one parameter tree serves every phase of the growth; a call at
`level` reads only the blocks it needs.

* Equalized learning rate (section 4.1): weights are drawn from N(0, 1) and scaled at runtime
  by He's constant c = gain / sqrt(fan_in) (gain sqrt(2) for layers followed by a leaky ReLU, 1
  for toRGB and the final score), so y = (c w) x + b. Adam's update is invariant to the scale of
  a gradient, so every weight, whatever its fan-in, moves at the same relative speed.
* Pixelwise feature normalization (section 4.2): b = a / sqrt(mean_c a^2 + 1e-8) over the
  channels at each pixel, after every convolution of G (and on the latent).
* Minibatch standard deviation (section 3): per group of `group_size` examples, the standard
  deviation of every feature over the group, averaged over features and pixels into one
  number, appended as a constant feature map to each example of the group.

Generator: z -> pixel norm -> dense to 4x4 -> conv3x3 (level 0); each further level
upsamples (nearest) and applies two conv3x3; every conv is followed by LeakyReLU(0.2) and pixel
norm. toRGB_l is a 1x1 conv (linear output). During the fade-in of level l (alpha in [0, 1]):

    G(z) = alpha * toRGB_l(h_l) + (1 - alpha) * upsample(toRGB_{l-1}(h_{l-1})).

Discriminator (mirrored): fromRGB_l (1x1 conv, LeakyReLU), then block l = two conv3x3 (to
`features[l]`, then `features[l-1]`) and 2x2 average pooling, down to level 0: minibatch stddev,
conv3x3, dense over the 4x4 map, dense to one score. During the fade-in of level l:

    h_{l-1} = alpha * block_l(fromRGB_l(x)) + (1 - alpha) * fromRGB_{l-1}(avgpool(x)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.nn.layers import mean_pool, upsample_nearest

Array = jax.Array
Dtype = Any

__all__ = ["CONVS", "EqualConv", "EqualDense", "ProGANDiscriminator", "ProGANGenerator",
           "conv2d", "conv_im2col", "level_of", "minibatch_stddev", "num_levels", "pixel_norm"]

SQRT2 = math.sqrt(2.0)


def num_levels(image_size: int) -> int:
  """Levels 4x4 ... image_size: log2(image_size) - 1 (image_size a power of two >= 4)."""
  if image_size < 4 or image_size & (image_size - 1):
    raise ValueError(f"ProGAN image size must be a power of two >= 4, got {image_size}")
  return int(math.log2(image_size)) - 1


def level_of(resolution: int) -> int:
  """The level of a resolution: 4 -> 0, 8 -> 1, ..."""
  return num_levels(resolution) - 1


def pixel_norm(x: Array, eps: float = 1e-8) -> Array:
  """x / sqrt(mean over the last (channel) axis of x^2 + eps), at every position."""
  x32 = x.astype(jnp.float32)
  return (x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), -1, keepdims=True) + eps)
          ).astype(x.dtype)


def minibatch_stddev(x: Array, group_size: int = 4) -> Array:
  """Appends the minibatch standard deviation as one feature map: [N, H, W, C] -> C + 1.

  With G = min(group_size, N) and M = N / G, example i = g M + m belongs to group m (the
  reference implementation's reshape to [G, M, ...]). For each group, s = mean over (h, w, c)
  of sqrt(Var_g[x] + 1e-8) (the biased variance over the G members); every member of the group
  gets the map s.

  Raises:
    ValueError: N is not a multiple of G.
  """
  n, h, w, c = x.shape
  g = min(group_size, n)
  if n % g:
    raise ValueError(f"minibatch stddev: the batch ({n}) must be a multiple of the group size "
                     f"({g}); set data.batch_size to a multiple of model.mbstd_group")
  y = x.astype(jnp.float32).reshape(g, n // g, h, w, c)
  y = y - jnp.mean(y, axis=0, keepdims=True)
  std = jnp.sqrt(jnp.mean(jnp.square(y), axis=0) + 1e-8)        # [M, H, W, C]
  s = jnp.mean(std, axis=(1, 2, 3))                               # [M]
  maps = jnp.broadcast_to(jnp.tile(s, g)[:, None, None, None], (n, h, w, 1))
  return jnp.concatenate([x, maps.astype(x.dtype)], axis=-1)


class EqualDense(nn.Module):
  """Dense layer with equalized learning rate: y = x (c W) + m b, W ~ N(0, 1 / m^2),
  c = m gain / sqrt(fan_in) applied at every call (the `scale` property), m = `lr_mul`.

  With m < 1 (StyleGAN's mapping network: 0.01) the stored parameters are m^-1 times larger
  than the weights they stand for, so Adam's steps, which have the scale of the learning rate
  in the stored coordinates, move the effective weights m times slower.

  Attributes:
    features: output size.
    gain: the numerator of He's constant (sqrt(2) before a leaky ReLU, 1 for a linear output).
    lr_mul: learning-rate multiplier m.
    bias_init: the effective bias at initialization (StyleGAN2's style affines: 1).
  """

  features: int
  gain: float = SQRT2
  lr_mul: float = 1.0
  bias_init: float = 0.0
  dtype: Dtype = jnp.float32

  def scale(self, fan_in: int) -> float:
    return self.gain / math.sqrt(fan_in) * self.lr_mul

  @nn.compact
  def __call__(self, x: Array) -> Array:
    fan_in = x.shape[-1]
    w = self.param("kernel", nn.initializers.normal(1.0 / self.lr_mul),
                   (fan_in, self.features))
    b = self.param("bias", nn.initializers.constant(self.bias_init / self.lr_mul),
                   (self.features,))
    w = (w * self.scale(fan_in)).astype(self.dtype)
    return jnp.dot(x.astype(self.dtype), w) + (b * self.lr_mul).astype(self.dtype)


def conv_im2col(x: Array, w: Array) -> Array:
  """Stride-1 SAME convolution [B, H, W, C] * [k, k, C, F] as k^2 shifted slices and one dot.

  Equal to `lax.conv_general_dilated` (tests/nn/test_progan.py); its derivatives of every
  order are slices, pads and dots. The ProGAN step runs each phase as a branch of `lax.switch`,
  and XLA:CPU runs the gradient convolutions of `lax.conv` inside control flow far slower
  than outside, while this form costs the same inside and outside (figures in
  docs/guide/performance.md).
  """
  k = w.shape[0]
  p = k // 2
  h, wd = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  cols = jnp.concatenate([xp[:, i:i + h, j:j + wd] for i in range(k) for j in range(k)], -1)
  return jnp.dot(cols, w.reshape(-1, w.shape[-1]))


CONVS = ("im2col", "lax")


def conv2d(x: Array, w: Array, conv: str = "im2col") -> Array:
  """Stride-1 SAME convolution of [B, H, W, C] by [k, k, C, F]: one dot for k = 1, else
  `conv_im2col` ('im2col') or `lax.conv_general_dilated` ('lax')."""
  if conv not in CONVS:
    raise ValueError(f"unknown conv {conv!r}; choose one of {CONVS}")
  if w.shape[0] == 1:
    return jnp.dot(x, w[0, 0])
  if conv == "im2col":
    return conv_im2col(x, w)
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


class EqualConv(nn.Module):
  """k x k convolution (stride 1, SAME) with equalized learning rate: c = gain / sqrt(k k C_in).

  Attributes:
    features: output channels.
    kernel_size: k (odd).
    gain: the numerator of He's constant.
    conv: 'im2col' (`conv_im2col`: fast inside control flow on CPU) or 'lax'
      (`lax.conv_general_dilated`: cuDNN / TPU convolutions).
    use_bias: add a learned bias.
  """

  features: int
  kernel_size: int = 3
  gain: float = SQRT2
  conv: str = "im2col"
  use_bias: bool = True
  dtype: Dtype = jnp.float32

  def scale(self, in_features: int) -> float:
    return self.gain / math.sqrt(self.kernel_size * self.kernel_size * in_features)

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k, cin = self.kernel_size, x.shape[-1]
    w = self.param("kernel", nn.initializers.normal(1.0), (k, k, cin, self.features))
    w = (w * self.scale(cin)).astype(self.dtype)
    y = conv2d(x.astype(self.dtype), w, self.conv)
    if not self.use_bias:
      return y
    return y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)


def _act(x: Array) -> Array:
  return nn.leaky_relu(x, 0.2)


def _check_features(features: Sequence[int]) -> None:
  if not features or any(f < 1 for f in features):
    raise ValueError(f"ProGAN features must be a non-empty tuple of positive channel counts "
                     f"(one per level, 4x4 first), got {features}")


class ProGANGenerator(nn.Module):
  """The growing generator (see the module docstring).

  Attributes:
    features: channels per level, 4x4 first (the paper at 128x128: 512, 512, 512, 512, 256, 128).
    channels: image channels.
    conv: `EqualConv.conv`.
  """

  features: Sequence[int]
  channels: int = 3
  conv: str = "im2col"
  dtype: Dtype = jnp.float32

  def setup(self):
    _check_features(self.features)
    f0 = self.features[0]
    # The paper's first layer is a 4x4 conv on the 1x1 latent; as a dense layer its He
    # constant keeps the conv's fan-in count of 16 kernel taps: sqrt(2) / 4 / sqrt(z_dim)
    # (the reference implementation's gain sqrt(2) / 4).
    self.latent_dense = EqualDense(16 * f0, gain=SQRT2 / 4, dtype=self.dtype)
    self.latent_conv = EqualConv(f0, conv=self.conv, dtype=self.dtype)
    self.convs = [(EqualConv(f, conv=self.conv, dtype=self.dtype, name=f"block{l}_conv0"),
                   EqualConv(f, conv=self.conv, dtype=self.dtype, name=f"block{l}_conv1"))
                  for l, f in enumerate(self.features) if l > 0]
    self.to_rgb = [EqualConv(self.channels, 1, gain=1.0, conv=self.conv, dtype=self.dtype,
                             name=f"to_rgb{l}")
                   for l in range(len(self.features))]

  def block(self, h: Array, level: int) -> Array:
    """Features of `level` from those of `level - 1` (level 0: from the latent)."""
    if level == 0:
      h = self.latent_dense(pixel_norm(h.astype(self.dtype)))
      h = pixel_norm(_act(h.reshape(h.shape[0], 4, 4, self.features[0])))
      return pixel_norm(_act(self.latent_conv(h)))
    c0, c1 = self.convs[level - 1]
    h = pixel_norm(_act(c0(upsample_nearest(h))))
    return pixel_norm(_act(c1(h)))

  def rgb(self, h: Array, level: int) -> Array:
    return self.to_rgb[level](h).astype(jnp.float32)

  def __call__(self, z: Array, *, level: int, fading: bool = False,
               alpha: Array | float = 1.0) -> Array:
    """Images [B, 4 * 2^level, ..., channels] (linear output); `fading` blends in level
    `level` with weight `alpha` over the upsampled output of `level - 1`."""
    if not 0 <= level < len(self.features):
      raise ValueError(f"level {level} outside 0..{len(self.features) - 1}")
    if fading and level == 0:
      raise ValueError("level 0 (4x4) has no lower level to fade in from")
    h = z
    prev = None
    for l in range(level + 1):
      prev, h = h, self.block(h, l)
    new = self.rgb(h, level)
    if not fading:
      return new
    old = upsample_nearest(self.rgb(prev, level - 1))
    return alpha * new + (1.0 - alpha) * old

  def init_all(self, z: Array) -> Array:
    """Touches every block and every toRGB (for `init`): the sum of all levels' outputs'
    means."""
    h, total = z, 0.0
    for l in range(len(self.features)):
      h = self.block(h, l)
      total = total + jnp.mean(self.rgb(h, l))
    return total


class ProGANDiscriminator(nn.Module):
  """The growing discriminator (see the module docstring); the level follows from x's size.

  Attributes:
    features: channels per level, 4x4 first (the generator's).
    mbstd_group: minibatch standard deviation group size (4 in the paper; 0 turns it off).
    conv: `EqualConv.conv`.
  """

  features: Sequence[int]
  mbstd_group: int = 4
  conv: str = "im2col"
  dtype: Dtype = jnp.float32

  def setup(self):
    _check_features(self.features)
    f = self.features
    self.from_rgb = [EqualConv(f[l], 1, conv=self.conv, dtype=self.dtype,
                               name=f"from_rgb{l}")
                     for l in range(len(f))]
    self.convs = [(EqualConv(f[l], conv=self.conv, dtype=self.dtype, name=f"block{l}_conv0"),
                   EqualConv(f[l - 1], conv=self.conv, dtype=self.dtype,
                             name=f"block{l}_conv1"))
                  for l in range(1, len(f))]
    self.final_conv = EqualConv(f[0], conv=self.conv, dtype=self.dtype)
    self.final_dense = EqualDense(f[0], dtype=self.dtype)
    self.score = EqualDense(1, gain=1.0, dtype=self.dtype)

  def rgb(self, x: Array, level: int) -> Array:
    """fromRGB_level: image -> features of `level`."""
    return _act(self.from_rgb[level](x.astype(self.dtype)))

  def block(self, h: Array, level: int) -> Array:
    """Features of `level` -> features of `level - 1` (level 0: the [B] scores)."""
    if level == 0:
      if self.mbstd_group:
        h = minibatch_stddev(h, self.mbstd_group)
      h = _act(self.final_conv(h))
      h = _act(self.final_dense(h.reshape(h.shape[0], -1)))
      return self.score(h)[:, 0].astype(jnp.float32)
    c0, c1 = self.convs[level - 1]
    return mean_pool(_act(c1(_act(c0(h)))))

  def trunk(self, h: Array, level: int) -> Array:
    """Scores [B] of features at `level` (blocks level, ..., 0)."""
    for l in range(level, -1, -1):
      h = self.block(h, l)
    return h

  def __call__(self, x: Array, *, fading: bool = False, alpha: Array | float = 1.0) -> Array:
    """Scores [B] of images x [B, 4 * 2^l, 4 * 2^l, C] at level l; `fading` blends block l
    in with weight `alpha` over fromRGB_{l-1} of the average-pooled image."""
    level = level_of(x.shape[1])
    if level >= len(self.features):
      raise ValueError(f"a {x.shape[1]}x{x.shape[1]} image is above this discriminator's "
                       f"{len(self.features)} levels")
    if fading and level == 0:
      raise ValueError("level 0 (4x4) has no lower level to fade in from")
    h = self.block(self.rgb(x, level), level)
    if fading:
      h = alpha * h + (1.0 - alpha) * self.rgb(mean_pool(x), level - 1)
    return self.trunk(h, level - 1) if level else h

  def init_all(self, x: Array) -> Array:
    """Touches every fromRGB and block (for `init`), x at the top level's resolution."""
    total = 0.0
    for l in range(level_of(x.shape[1]), -1, -1):
      total = total + jnp.mean(self.trunk(self.rgb(x, l), l))
      x = mean_pool(x)
    return total
