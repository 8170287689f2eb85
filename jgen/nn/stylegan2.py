"""StyleGAN2 networks (Karras et al. 2020, "Analyzing and Improving the Image Quality of
StyleGAN"): mapping network, modulated synthesis network with a skip architecture, and the
residual discriminator.

Equalized learning rate everywhere (`jgen.nn.progan.EqualDense` / `EqualConv`: weights N(0, 1)
scaled by gain / sqrt(fan_in) at runtime). Resolutions r = 4, 8, ..., R are blocks 0 .. L - 1
(L = log2(R) - 1) with `features[l]` channels, 4x4 first (as in `jgen.nn.progan`).

* Mapping: z -> z / sqrt(mean z^2 + 1e-8) (`normalize_2nd_moment`); with classes, a
  one-hot label embedded by a dense layer, normalized the same way and concatenated to z
  (stylegan2-ada's conditional mapping); then `num_layers` dense layers (LeakyReLU 0.2,
  learning-rate multiplier 0.01) to w. The generator broadcasts w to the `num_ws` style
  inputs; the tracked average w and truncation live in `jgen.gan.stylegan2`.
* Modulated convolution (section 2.2): styles s = A(w) (a dense affine, bias initialized to
  1), weights w'_ijk = s_i w_ijk, demodulated
  w''_ijk = w'_ijk / sqrt(sum_{i,k} w'_ijk^2 + 1e-8); computed without a per-example kernel
  as conv(x * s, w) * d_j with d_j = (sum_i s_i^2 sum_k w_ijk^2 + 1e-8)^(-1/2) (the
  reference's `fused_modconv=False` path, equal in exact arithmetic).
* Synthesis layer: modulated 3x3 conv, + per-pixel noise N(0, 1) times a learned per-layer
  strength (initialized to 0), + bias, LeakyReLU(0.2) * sqrt(2). Upsampling layers first
  upsample x by 2 with the [1, 3, 3, 1] FIR filter (`fir_upsample`; the reference uses a
  transposed stride-2 conv followed by that filter: the same linear map up to the borders).
* Synthesis network ("skip"): a learned 4x4 constant; block 0 = one layer; block l > 0 = an
  upsampling layer and a layer; every block has a toRGB (modulated 1x1 conv, no demodulation,
  styles scaled by 1 / sqrt(C_in)) and img = fir_upsample(img) + toRGB(x). Style inputs:
  block 0 reads ws[0] (conv) and ws[1] (toRGB), block l reads ws[2l - 1], ws[2l], ws[2l + 1]
  (its toRGB shares its index with the next block's first conv), so num_ws = 2 L.
* Noise modes: "random" (a fresh map per example from the "noise" rng, training and
  sampling), "const" (one map per layer from the "noise" rng, shared by every example:
  deterministic images given the key, the reference's noise_mode='const'), "none".
* Discriminator ("resnet", default; "orig" without the skips): fromRGB (1x1 conv) at R; block
  l > 0: conv3x3 to features[l], conv3x3 to features[l - 1], then `fir_downsample` (the
  [1, 3, 3, 1] filter and stride 2, which the reference applies before its stride-2 conv); the
  residual skip is fir_downsample then a 1x1 conv without bias, and the block's output is
  (skip + main) / sqrt(2). Epilogue at 4x4: minibatch stddev (`jgen.nn.progan`), conv3x3,
  dense, dense to one score; conditional: dense to `cmap_dim` and the projection
  sum_j out_j cmap_j / sqrt(cmap_dim) with cmap = a label-only mapping network.

Reference options (all off by default, which keeps today's parameters and outputs; the
StyleGAN2-ADA converter `jgen.convert.stylegan2` turns them on, and tests/convert/
test_stylegan2.py measures them against NVlabs' stylegan2-ada-pytorch `training/networks.py`):

* ``resample="exact"``: the reference's borders. Up layers: `fir_upsample_full` (all 2H + 2
  samples of the zero-inserted, [1, 3, 3, 1]-filtered map, i.e. one more per side than
  `fir_upsample`) then a VALID convolution with the kernel flipped (the reference's transposed
  stride-2 conv convolves), which equals the reference's conv_transpose + upfirdn2d(pad 1) as
  both are the same linear shift-invariant composition restricted to the same 2H outputs. The
  discriminator's down layers: `blur_pad2` (the filter over the map zero padded by 2 per side,
  2H + 1 samples) then a stride-2 VALID 3x3 conv, as conv2d_resample does for down=2. "fir"
  (default): FIR upsample then a SAME conv, SAME conv then `fir_downsample` (equal inside,
  up to 2.2 apart on the border rows and columns of random networks).
* ``conv_clamp``: the reference's bias_act clamp: after each layer's activation (and toRGB's
  bias) values are clipped to [-conv_clamp, conv_clamp] (its pretrained configs: 256).
* ``noise_buffers``: each synthesis layer stores its own ``noise_const`` map [res, res] (a
  parameter initialized N(0, 1); training uses random noise, so its gradient is zero and
  Adam leaves it as it is); noise mode "const" then reads it instead of drawing from the rng.
* ``flatten="nchw"``: the epilogue's dense layer reads the 4x4 map flattened channel-major
  (torch's NCHW ``flatten(1)``), so a reference fc weight is used as it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.nn.progan import SQRT2, EqualConv, EqualDense, conv2d, minibatch_stddev, num_levels

Array = jax.Array
Dtype = Any

__all__ = ["FLATTENS", "NOISE_MODES", "RESAMPLES", "MappingNetwork", "ModulatedConv",
           "StyleGAN2Discriminator", "StyleGAN2Generator", "SynthesisNetwork", "blur_pad2",
           "fir_downsample", "fir_upsample", "fir_upsample_full", "normalize_2nd_moment"]

NOISE_MODES = ("random", "const", "none")
RESAMPLES = ("fir", "exact")
FLATTENS = ("nhwc", "nchw")


def normalize_2nd_moment(x: Array, eps: float = 1e-8) -> Array:
  """x / sqrt(mean over the last axis of x^2 + eps)."""
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), -1, keepdims=True) + eps)


def _shift(x: Array, axis: int, offset: int) -> Array:
  """y[i] = x[i + offset] along `axis`, zero outside."""
  n = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (max(-offset, 0), max(offset, 0))
  xp = jnp.pad(x, pad)
  start = max(offset, 0)
  return jax.lax.slice_in_dim(xp, start, start + n, axis=axis)


def _up1d(x: Array, axis: int) -> Array:
  """Length n -> 2n: y[2i] = (x[i-1] + 3 x[i]) / 4, y[2i+1] = (3 x[i] + x[i+1]) / 4."""
  even = 0.25 * _shift(x, axis, -1) + 0.75 * x
  odd = 0.75 * x + 0.25 * _shift(x, axis, 1)
  y = jnp.stack([even, odd], axis=axis + 1)
  shape = list(x.shape)
  shape[axis] *= 2
  return y.reshape(shape)


def _down1d(x: Array, axis: int) -> Array:
  """Length 2n -> n: y[i] = (x[2i-1] + 3 x[2i] + 3 x[2i+1] + x[2i+2]) / 8."""
  blurred = (_shift(x, axis, -1) + 3.0 * x + 3.0 * _shift(x, axis, 1)
             + _shift(x, axis, 2)) / 8.0
  return jax.lax.slice_in_dim(blurred, 0, None, stride=2, axis=axis)


def fir_upsample(x: Array) -> Array:
  """[B, H, W, C] -> [B, 2H, 2W, C]: zero insertion, then the separable filter [1, 3, 3, 1] / 4
  per axis (upfirdn2d with f = [1, 3, 3, 1], up = 2, gain 4, zero padding)."""
  return _up1d(_up1d(x, 1), 2)


def fir_downsample(x: Array) -> Array:
  """[B, 2H, 2W, C] -> [B, H, W, C]: the separable filter [1, 3, 3, 1] / 8 per axis, zero
  padded by one on each side, then every second sample (upfirdn2d with down = 2)."""
  if x.shape[1] % 2 or x.shape[2] % 2:
    raise ValueError(f"fir_downsample needs even height and width, got {x.shape[1:3]}")
  return _down1d(_down1d(x, 1), 2)


def _up1d_full(x: Array, axis: int) -> Array:
  """Length n -> 2n + 2: `_up1d` with the two border samples x[0] / 4 before and x[n - 1] / 4
  after (the full convolution of the zero-inserted signal with [1, 3, 3, 1] / 4)."""
  first = 0.25 * jax.lax.slice_in_dim(x, 0, 1, axis=axis)
  last = 0.25 * jax.lax.slice_in_dim(x, x.shape[axis] - 1, x.shape[axis], axis=axis)
  return jnp.concatenate([first, _up1d(x, axis), last], axis=axis)


def fir_upsample_full(x: Array) -> Array:
  """[B, H, W, C] -> [B, 2H + 2, 2W + 2, C]: `fir_upsample` with one more sample per side
  (module docstring, ``resample="exact"``); a VALID 3x3 conv of it is 2H x 2W."""
  return _up1d_full(_up1d_full(x, 1), 2)


def _blur1d_pad2(x: Array, axis: int) -> Array:
  """Length n -> n + 1: b[i] = (x[i-2] + 3 x[i-1] + 3 x[i] + x[i+1]) / 8, zero outside."""
  n = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (2, 2)
  xp = jnp.pad(x, pad)
  taps = (1.0, 3.0, 3.0, 1.0)
  return sum(t / 8.0 * jax.lax.slice_in_dim(xp, j, j + n + 1, axis=axis)
             for j, t in enumerate(taps))


def blur_pad2(x: Array) -> Array:
  """[B, H, W, C] -> [B, H + 1, W + 1, C]: the separable [1, 3, 3, 1] / 8 filter over x zero
  padded by 2 per side (upfirdn2d's padding before the reference's stride-2 3x3 conv)."""
  return _blur1d_pad2(_blur1d_pad2(x, 1), 2)


def _valid_conv(x: Array, w: Array, stride: int = 1) -> Array:
  """VALID correlation of [B, H, W, C] by [k, k, C, F] with `stride`."""
  return jax.lax.conv_general_dilated(x, w, (stride, stride), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _clamp(x: Array, clamp: float | None) -> Array:
  """The reference's bias_act clamp (None: none)."""
  return x if clamp is None else jnp.clip(x, -clamp, clamp)


def _check_option(name: str, value: str, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ValueError(f"unknown {name} {value!r}; choose one of {tuple(choices)}")


def _lrelu(x: Array) -> Array:
  """LeakyReLU(0.2) * sqrt(2) (the reference's bias_act 'lrelu' with its default gain)."""
  return nn.leaky_relu(x, 0.2) * SQRT2


class MappingNetwork(nn.Module):
  """z (and labels) -> w [B, w_dim] (module docstring).

  Attributes:
    w_dim: output size (and the hidden layers' width).
    num_layers: dense layers (StyleGAN2: 8; stylegan2-ada's cifar: 2).
    num_classes: > 0 embeds labels; with z of size 0 the network maps labels only (the
      discriminator's cmap).
    lr_mul: learning-rate multiplier of the layers (0.01).
  """

  w_dim: int = 512
  num_layers: int = 8
  num_classes: int = 0
  lr_mul: float = 0.01
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: Array | None, labels: Array | None = None) -> Array:
    parts = []
    if z is not None and z.shape[-1]:
      parts.append(normalize_2nd_moment(z.astype(jnp.float32)))
    if self.num_classes:
      if labels is None:
        raise ValueError(f"this mapping network is conditional ({self.num_classes} classes): "
                         "pass labels")
      onehot = jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)
      parts.append(normalize_2nd_moment(EqualDense(self.w_dim, gain=1.0, name="embed")(onehot)))
    if not parts:
      raise ValueError("a mapping network needs z (z_dim > 0) or classes")
    x = jnp.concatenate(parts, -1) if len(parts) > 1 else parts[0]
    for i in range(self.num_layers):
      x = _lrelu(EqualDense(self.w_dim, gain=1.0, lr_mul=self.lr_mul, dtype=self.dtype,
                            name=f"fc{i}")(x))
    return x.astype(jnp.float32)


class ModulatedConv(nn.Module):
  """Modulated (and optionally demodulated) k x k convolution of x [B, H, W, C_in] by the
  styles of w [B, w_dim] (module docstring).

  Attributes:
    features: output channels.
    kernel_size: k.
    demodulate: divide each output channel by its modulated weights' norm (toRGB: False, and
      its styles are scaled by 1 / sqrt(k^2 C_in) instead).
    conv: `jgen.nn.progan.conv2d`'s formulation.
    valid_flipped: a VALID convolution with the kernel flipped (the exact up layer's, after
      `fir_upsample_full`) instead of a SAME correlation.
  """

  features: int
  kernel_size: int = 3
  demodulate: bool = True
  conv: str = "im2col"
  valid_flipped: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, w: Array) -> Array:
    k, cin = self.kernel_size, x.shape[-1]
    styles = EqualDense(cin, gain=1.0, bias_init=1.0, name="affine")(w)     # [B, C_in]
    weight = self.param("kernel", nn.initializers.normal(1.0), (k, k, cin, self.features))
    weight = weight * (1.0 / math.sqrt(k * k * cin))
    if not self.demodulate:
      styles = styles * (1.0 / math.sqrt(k * k * cin))
    xs = (x * styles[:, None, None, :]).astype(self.dtype)
    if self.valid_flipped:
      y = _valid_conv(xs, weight[::-1, ::-1].astype(self.dtype))
    else:
      y = conv2d(xs, weight.astype(self.dtype), self.conv)
    if self.demodulate:
      sq = jnp.sum(jnp.square(weight), axis=(0, 1))                         # [C_in, F]
      d = jax.lax.rsqrt(jnp.square(styles) @ sq + 1e-8)                     # [B, F]
      y = y * d[:, None, None, :].astype(y.dtype)
    return y


class SynthesisLayer(nn.Module):
  """(optional upsampling) -> modulated conv -> noise * strength -> bias -> lrelu -> clamp
  (module docstring: `resample`, `conv_clamp`, `noise_buffers`)."""

  features: int
  up: bool = False
  conv: str = "im2col"
  resample: str = "fir"
  conv_clamp: float | None = None
  noise_buffers: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, w: Array, noise_mode: str = "random") -> Array:
    exact = self.up and self.resample == "exact"
    if self.up:
      x = fir_upsample_full(x) if exact else fir_upsample(x)
    y = ModulatedConv(self.features, 3, conv=self.conv, valid_flipped=exact, dtype=self.dtype,
                      name="conv")(x, w)
    strength = self.param("noise_strength", nn.initializers.zeros, ())
    b, h, wd = y.shape[:3]
    stored = (self.param("noise_const", nn.initializers.normal(1.0), (h, wd))
              if self.noise_buffers else None)
    if noise_mode == "const" and stored is not None:
      y = y + (stored[None, :, :, None] * strength).astype(y.dtype)
    elif noise_mode != "none" and self.has_rng("noise"):
      shape = (b if noise_mode == "random" else 1, h, wd, 1)
      y = y + (jax.random.normal(self.make_rng("noise"), shape) * strength).astype(y.dtype)
    y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(y.dtype)
    return _clamp(_lrelu(y), self.conv_clamp)


def _check(features: Sequence[int], image_size: int) -> int:
  levels = num_levels(image_size)
  if len(features) != levels or any(f < 1 for f in features):
    raise ValueError(f"a {image_size}x{image_size} StyleGAN2 has {levels} blocks (4x4 ... "
                     f"{image_size}x{image_size}): give model.features as {levels} positive "
                     f"channel counts, 4x4 first, got {tuple(features)}")
  return levels


class SynthesisNetwork(nn.Module):
  """ws [B, num_ws, w_dim] -> images [B, R, R, channels] (skip architecture; `resample`,
  `conv_clamp`, `noise_buffers`: the module docstring's reference options)."""

  image_size: int
  features: Sequence[int]
  channels: int = 3
  conv: str = "im2col"
  dtype: Dtype = jnp.float32
  resample: str = "fir"
  conv_clamp: float | None = None
  noise_buffers: bool = False

  @property
  def num_ws(self) -> int:
    return 2 * num_levels(self.image_size)

  @nn.compact
  def __call__(self, ws: Array, noise_mode: str = "random") -> Array:
    levels = _check(self.features, self.image_size)
    _check_option("resample", self.resample, RESAMPLES)
    if noise_mode not in NOISE_MODES:
      raise ValueError(f"unknown noise mode {noise_mode!r}; choose one of {NOISE_MODES}")
    if ws.ndim != 3 or ws.shape[1] != self.num_ws:
      raise ValueError(f"ws must be [B, {self.num_ws}, w_dim], got {ws.shape}")
    const = self.param("const", nn.initializers.normal(1.0), (4, 4, self.features[0]))
    x = jnp.broadcast_to(const, (ws.shape[0], *const.shape)).astype(self.dtype)
    img = None
    layer = lambda f, name, up=False: SynthesisLayer(  # noqa: E731
        f, up=up, conv=self.conv, resample=self.resample, conv_clamp=self.conv_clamp,
        noise_buffers=self.noise_buffers, dtype=self.dtype, name=name)
    for l in range(levels):
      f = self.features[l]
      if l == 0:
        x = layer(f, "b0_conv1")(x, ws[:, 0], noise_mode)
      else:
        x = layer(f, f"b{l}_conv0", up=True)(x, ws[:, 2 * l - 1], noise_mode)
        x = layer(f, f"b{l}_conv1")(x, ws[:, 2 * l], noise_mode)
      rgb = ModulatedConv(self.channels, 1, demodulate=False, conv=self.conv,
                          dtype=self.dtype, name=f"b{l}_torgb")(x, ws[:, 2 * l + 1])
      rgb = _clamp(rgb + self.param(f"b{l}_torgb_bias", nn.initializers.zeros,
                                    (self.channels,)).astype(rgb.dtype), self.conv_clamp)
      img = rgb if img is None else fir_upsample(img) + rgb
    return img.astype(jnp.float32)


class StyleGAN2Generator(nn.Module):
  """Mapping + synthesis. `__call__(z, labels)` renders with w broadcast to every layer (no
  mixing, no truncation, no noise unless a "noise" rng is given); `jgen.gan.stylegan2`
  composes `map` and `synthesize` for mixing and truncation.

  Attributes:
    image_size: R (a power of two >= 4).
    features: channels per block, 4x4 first.
    channels: image channels.
    z_dim, w_dim: latent sizes.
    mapping_layers: depth of the mapping network.
    num_classes: > 0 for a conditional mapping.
    conv: `jgen.nn.progan.conv2d`'s formulation.
    mapping_lr_mul: the mapping layers' learning-rate multiplier.
    resample, conv_clamp, noise_buffers: the reference options (module docstring).
  """

  image_size: int
  features: Sequence[int]
  channels: int = 3
  z_dim: int = 512
  w_dim: int = 512
  mapping_layers: int = 8
  num_classes: int = 0
  conv: str = "im2col"
  dtype: Dtype = jnp.float32
  mapping_lr_mul: float = 0.01
  resample: str = "fir"
  conv_clamp: float | None = None
  noise_buffers: bool = False

  def setup(self):
    self.mapping = MappingNetwork(self.w_dim, self.mapping_layers, self.num_classes,
                                  lr_mul=self.mapping_lr_mul, dtype=self.dtype)
    self.synthesis = SynthesisNetwork(self.image_size, self.features, self.channels,
                                      self.conv, self.dtype, resample=self.resample,
                                      conv_clamp=self.conv_clamp,
                                      noise_buffers=self.noise_buffers)

  @property
  def num_ws(self) -> int:
    return 2 * num_levels(self.image_size)

  def map(self, z: Array, labels: Array | None = None) -> Array:
    """w [B, w_dim]."""
    return self.mapping(z, labels)

  def synthesize(self, ws: Array, noise_mode: str = "random") -> Array:
    """Images of ws [B, num_ws, w_dim]."""
    return self.synthesis(ws, noise_mode)

  def __call__(self, z: Array, labels: Array | None = None, *, train: bool = False) -> Array:
    del train
    w = self.map(z, labels)
    return self.synthesize(jnp.broadcast_to(w[:, None], (w.shape[0], self.num_ws, w.shape[-1])))


ARCHITECTURES = ("resnet", "orig")


class _ExactDownConv(nn.Module):
  """The reference's 3x3 down=2 conv: `blur_pad2` then a stride-2 VALID conv (equalized lr,
  gain 1, no bias: the caller adds it). Its parameters are EqualConv's without the bias."""

  features: int
  kernel_size: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k, cin = self.kernel_size, x.shape[-1]
    w = self.param("kernel", nn.initializers.normal(1.0), (k, k, cin, self.features))
    w = (w * (1.0 / math.sqrt(k * k * cin))).astype(self.dtype)
    return _valid_conv(blur_pad2(x.astype(self.dtype)), w, stride=2)


class StyleGAN2Discriminator(nn.Module):
  """Scores [B] of images [B, R, R, C] (module docstring).

  Attributes:
    features: channels per block, 4x4 first.
    architecture: "resnet" (StyleGAN2's) or "orig" (stylegan2-ada's cifar configuration).
    mbstd_group: minibatch stddev group (4; cifar: 32); 0 turns it off.
    num_classes: > 0 for the projection head.
    cmap_dim: projection size (default: features[0]).
    mapping_layers: depth of the label mapping network of the projection.
    conv: `jgen.nn.progan.conv2d`'s formulation.
    resample, conv_clamp, flatten: the reference options (module docstring).
  """

  features: Sequence[int]
  architecture: str = "resnet"
  mbstd_group: int = 4
  num_classes: int = 0
  cmap_dim: int = 0
  mapping_layers: int = 8
  conv: str = "im2col"
  dtype: Dtype = jnp.float32
  resample: str = "fir"
  conv_clamp: float | None = None
  flatten: str = "nhwc"

  @nn.compact
  def __call__(self, x: Array, labels: Array | None = None, *, train: bool = False) -> Array:
    del train
    if self.architecture not in ARCHITECTURES:
      raise ValueError(f"unknown discriminator architecture {self.architecture!r}; choose one "
                       f"of {ARCHITECTURES}")
    _check_option("resample", self.resample, RESAMPLES)
    _check_option("flatten", self.flatten, FLATTENS)
    levels = _check(self.features, x.shape[1])
    f = self.features
    act = lambda y: _clamp(_lrelu(y), self.conv_clamp)  # noqa: E731
    # gain 1 and LeakyReLU * sqrt(2) (`_lrelu`), the reference's weight and activation gains.
    conv = lambda feats, k=3, name=None, **kw: EqualConv(  # noqa: E731
        feats, k, gain=1.0, conv=self.conv, dtype=self.dtype, name=name, **kw)
    h = act(conv(f[-1], 1, name="from_rgb")(x.astype(self.dtype)))
    for l in range(levels - 1, 0, -1):
      y = act(conv(f[l], name=f"b{l}_conv0")(h))
      # Downsampled before its bias and activation, as the reference's conv1 (down=2) is.
      if self.resample == "exact":
        y = _ExactDownConv(f[l - 1], dtype=self.dtype, name=f"b{l}_conv1")(y)
      else:
        y = fir_downsample(conv(f[l - 1], name=f"b{l}_conv1", use_bias=False)(y))
      # The reference clamps conv1 at conv_clamp sqrt(1/2) after its sqrt(1/2) gain: the same.
      y = act(y + self.param(f"b{l}_conv1_bias", nn.initializers.zeros,
                             (f[l - 1],)).astype(y.dtype))
      if self.architecture == "resnet":
        skip = conv(f[l - 1], 1, name=f"b{l}_skip", use_bias=False)(fir_downsample(h))
        y = (y + skip) * (1.0 / SQRT2)
      h = y
    if self.mbstd_group:
      h = minibatch_stddev(h, self.mbstd_group)
    h = act(conv(f[0], name="epilogue_conv")(h))
    if self.flatten == "nchw":
      h = jnp.transpose(h, (0, 3, 1, 2))
    h = _lrelu(EqualDense(f[0], gain=1.0, dtype=self.dtype, name="epilogue_fc")(
        h.reshape(h.shape[0], -1)))
    if not self.num_classes:
      return EqualDense(1, gain=1.0, dtype=self.dtype, name="out")(h)[:, 0].astype(jnp.float32)
    cmap_dim = self.cmap_dim or f[0]
    out = EqualDense(cmap_dim, gain=1.0, dtype=self.dtype, name="out")(h)
    cmap = MappingNetwork(cmap_dim, self.mapping_layers, self.num_classes, dtype=self.dtype,
                          name="cmap")(None, labels)
    return (jnp.sum(out * cmap, -1) / math.sqrt(cmap_dim)).astype(jnp.float32)
