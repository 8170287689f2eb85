"""Building blocks shared by the families: the one residual block, norms, attention, resampling.

The residual block (`ResBlock`) serves the DDPM U-Net (`ddpm_res_block`), the autoencoders'
encoder/decoder and the WGAN-GP ResNet generator and critic; its fields pick the norm, the
activation, an optional conditioning embedding, dropout, up/down-sampling and the shortcut.

All tensors are NHWC. Every module takes ``dtype`` (the compute dtype) and
``param_dtype`` (the dtype parameters are stored in), so bfloat16 compute with
float32 parameters works. Group normalisation statistics and attention
softmaxes are always computed in float32.

The DDPM pieces (``ddpm_conv``, ``ddpm_dense``, ``ddpm_res_block``, ``AttnBlock``,
``Downsample``, ``Upsample``) use the initialisation of the official DDPM code: variance
scaling with ``fan_avg`` and a uniform distribution (scale 1), zero biases. The last
convolution of each residual branch (``ddpm_res_block``'s ``conv2`` and
``AttnBlock.proj_out``) is zero-initialised (DDPM uses scale 1e-10, which is
zero for all practical purposes), so every block starts as the identity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any

__all__ = [
    "AttnBlock",
    "CrossAttnBlock",
    "DDPM_NAMES",
    "Downsample",
    "NORMS",
    "Norm",
    "RESAMPLES",
    "ResBlock",
    "ResBlockNames",
    "Upsample",
    "ddpm_conv",
    "ddpm_dense",
    "ddpm_res_block",
    "default_init",
    "mean_pool",
    "timestep_embedding",
    "upsample_nearest",
]


def default_init(scale: float = 1.0) -> nn.initializers.Initializer:
  """Returns the DDPM weight initialiser.

  Args:
    scale: Variance scale. ``0`` gives an all-zeros initialiser.

  Returns:
    A ``fan_avg`` / uniform variance-scaling initialiser, or zeros.
  """
  if scale == 0.0:
    return nn.initializers.zeros
  return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


def timestep_embedding(t: Array, dim: int, max_period: float = 10000.0, *,
                       flip_sin_to_cos: bool = False, freq_shift: float = 1.0) -> Array:
  """Sinusoidal timestep embedding as in DDPM / the Transformer.

  With ``half = dim // 2`` frequencies ``f_i = max_period ** (-i / (half - freq_shift))`` for
  ``i = 0 .. half - 1``, the features are ``[sin(t f), cos(t f)]``, or ``[cos(t f), sin(t f)]``
  with ``flip_sin_to_cos``. The defaults are the DDPM convention (``freq_shift = 1``: the last
  frequency is exactly ``1 / max_period``); Stable Diffusion's U-Net uses ``flip_sin_to_cos=True,
  freq_shift=0`` (diffusers' ``Timesteps(flip_sin_to_cos, downscale_freq_shift)``). An odd
  ``dim`` is padded with one zero feature.

  Args:
    t: Timesteps of shape ``[B]``, integer or floating point.
    dim: Embedding size, at least 2.
    max_period: Controls the lowest frequency.
    flip_sin_to_cos: Put the cosines first.
    freq_shift: The shift of the exponent's denominator.

  Returns:
    A float32 array of shape ``[B, dim]``.

  Raises:
    ValueError: If ``t`` is not rank 1 or ``dim < 2``.
  """
  t = jnp.asarray(t)
  if t.ndim != 1:
    raise ValueError(f"t must have shape [B], got shape {t.shape}.")
  if dim < 2:
    raise ValueError(f"dim must be at least 2, got {dim}.")
  half = dim // 2
  denominator = half - freq_shift
  exponent = math.log(max_period) / (denominator if denominator > 0 else 1)
  freqs = jnp.exp(-exponent * jnp.arange(half, dtype=jnp.float32))
  args = t.astype(jnp.float32)[:, None] * freqs[None, :]
  parts = [jnp.cos(args), jnp.sin(args)] if flip_sin_to_cos else [jnp.sin(args), jnp.cos(args)]
  emb = jnp.concatenate(parts, axis=-1)
  if dim % 2 == 1:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def ddpm_conv(
    features: int,
    kernel: int,
    *,
    dtype: Dtype,
    param_dtype: Dtype,
    strides: int = 1,
    init_scale: float = 1.0,
    padding: Any = "SAME",
    name: str | None = None,
) -> nn.Conv:
  """Builds a square-kernel convolution (padding 'SAME' by default) with the DDPM init."""
  return nn.Conv(
      features,
      (kernel, kernel),
      strides=(strides, strides),
      padding=padding,
      kernel_init=default_init(init_scale),
      bias_init=nn.initializers.zeros,
      dtype=dtype,
      param_dtype=param_dtype,
      name=name,
  )


def ddpm_dense(
    features: int,
    *,
    dtype: Dtype,
    param_dtype: Dtype,
    init_scale: float = 1.0,
    name: str | None = None,
) -> nn.Dense:
  """Builds a dense layer (equivalently a 1x1 conv) with the DDPM init."""
  return nn.Dense(
      features,
      kernel_init=default_init(init_scale),
      bias_init=nn.initializers.zeros,
      dtype=dtype,
      param_dtype=param_dtype,
      name=name,
  )


NORMS = ("group", "batch", "layer", "none")


class Norm(nn.Module):
  """The normalizations of the residual blocks: 'group', 'batch', 'layer' or 'none'.

  'group' normalizes in float32 and casts back to ``dtype`` (its parameters sit in a submodule
  ``norm``, the layout of the DDPM checkpoints); 'batch' keeps running statistics in the
  ``batch_stats`` collection, updated when ``train=True`` (momentum 0.9); 'layer' normalizes
  each example over all its axes but the batch axis (the WGAN-GP critic's choice: batch norm
  breaks the per-example gradient penalty).

  Attributes:
    kind: One of ``NORMS``.
    num_groups: Groups of 'group'; must divide the channel count.
    epsilon: Numerical stability constant; ``None``: 1e-5 for 'batch', else 1e-6.
    dtype: Output dtype.
    param_dtype: Dtype of the scale and bias parameters.
  """

  kind: str = "group"
  num_groups: int = 32
  epsilon: float | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool = False) -> Array:
    """Normalises ``x`` of shape ``[B, ..., C]``.

    Raises:
      ValueError: An unknown kind, or ``num_groups`` does not divide the channel count.
    """
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.kind == "group":
      channels = x.shape[-1]
      if channels % self.num_groups != 0:
        raise ValueError(f"num_groups={self.num_groups} must divide the channel "
                         f"count {channels}.")
      y = nn.GroupNorm(num_groups=self.num_groups, epsilon=self.epsilon or 1e-6,
                       dtype=jnp.float32, param_dtype=self.param_dtype,
                       name="norm")(x.astype(jnp.float32))
      return y.astype(self.dtype)
    if self.kind == "batch":
      return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                          epsilon=self.epsilon or 1e-5, **kw)(x)
    if self.kind == "layer":
      return nn.LayerNorm(reduction_axes=tuple(range(1, x.ndim)), feature_axes=-1,
                          epsilon=self.epsilon or 1e-6, **kw)(x)
    if self.kind == "none":
      return x
    raise ValueError(f"unknown normalization {self.kind!r}; choose one of {NORMS}")


class ResBlockNames(NamedTuple):
  """Names of a `ResBlock`'s submodules; ``None`` lets Flax number them (``Conv_0`` ...).

  The names are the parameter paths (and, through Flax's key folding, the random streams of
  their initialisers), so each family keeps the layout its checkpoints were written with.
  """

  norm1: str | None = None
  conv1: str | None = None
  emb_proj: str | None = None
  norm2: str | None = None
  conv2: str | None = None
  shortcut: str | None = None


DDPM_NAMES = ResBlockNames("norm1", "conv1", "temb_proj", "norm2", "conv2", "nin_shortcut")
RESAMPLES = ("none", "up", "down")


class ResBlock(nn.Module):
  """The one pre-activation residual block of jgen (DDPM U-Net, autoencoders, WGAN-GP ResNet).

  ``norm1 -> act -> [up] -> conv3x3 -> [+ Dense(act(emb))] -> norm2 -> act -> dropout ->
  conv3x3 -> [down]``, added to the input, which goes through a ``shortcut_kernel`` conv when
  the channel count changes or the block resamples (upsampled before it, mean-pooled after it).
  Up is 2x nearest neighbour, down 2x2 mean pooling.

  Attributes:
    features: Output channels; ``None`` keeps the input channel count.
    norm: Normalization kind (`NORMS`).
    num_groups: Groups of 'group' norm (at most one group per channel).
    activation: Nonlinearity (``nn.silu``: DDPM's swish; ``nn.relu``: WGAN-GP).
    dropout: Dropout rate before the second conv (``'dropout'`` rngs, train only).
    resample: 'none', 'up' or 'down'.
    first: No norm and activation before the first conv (a critic's block on the image).
    shortcut_kernel: Kernel size of the shortcut conv (1 or 3).
    kernel_init: Initialiser of the first conv, the embedding projection and the shortcut.
    out_kernel_init: Initialiser of the second conv (zeros: the block starts as identity).
    names: Submodule names (`ResBlockNames`; `DDPM_NAMES` for the U-Net).
    norm_eps: epsilon of the norms; None: `Norm`'s default (1e-6 for 'group').
    dtype: Compute dtype.
    param_dtype: Parameter dtype.
  """

  features: int | None = None
  norm: str = "group"
  num_groups: int = 32
  activation: Callable[[Array], Array] = nn.silu
  dropout: float = 0.0
  resample: str = "none"
  first: bool = False
  shortcut_kernel: int = 1
  kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init
  out_kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init
  names: ResBlockNames = ResBlockNames()
  norm_eps: float | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _norm(self, x: Array, name: str | None, *, train: bool) -> Array:
    groups = min(self.num_groups, x.shape[-1])
    return Norm(self.norm, groups, epsilon=self.norm_eps, dtype=self.dtype,
                param_dtype=self.param_dtype, name=name)(x, train=train)

  def _conv(self, features: int, kernel: int, init, name: str | None) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), padding="SAME", kernel_init=init,
                   bias_init=nn.initializers.zeros, dtype=self.dtype,
                   param_dtype=self.param_dtype, name=name)

  @nn.compact
  def __call__(self, x: Array, emb: Array | None = None, *, train: bool) -> Array:
    """Applies the block.

    Args:
      x: Features ``[B, H, W, C_in]``.
      emb: Optional conditioning embedding ``[B, D]`` (a timestep embedding), projected to
        ``features`` and added after the first conv.
      train: Batch statistics and dropout when True.

    Returns:
      Features ``[B, H', W', features]`` in ``dtype`` (H' = 2H up, H/2 down).

    Raises:
      ValueError: An unknown ``resample`` (or norm: see `Norm`).
    """
    if self.resample not in RESAMPLES:
      raise ValueError(f"unknown resample {self.resample!r}; choose one of {RESAMPLES}")
    x = x.astype(self.dtype)
    out_ch = self.features if self.features is not None else x.shape[-1]
    n = self.names
    h = x
    if not self.first:
      h = self.activation(self._norm(h, n.norm1, train=train))
    if self.resample == "up":
      h = upsample_nearest(h)
    h = self._conv(out_ch, 3, self.kernel_init, n.conv1)(h)
    if emb is not None:
      e = nn.Dense(out_ch, kernel_init=self.kernel_init, bias_init=nn.initializers.zeros,
                   dtype=self.dtype, param_dtype=self.param_dtype, name=n.emb_proj)(
                       self.activation(emb.astype(self.dtype)))
      h = h + e[:, None, None, :]
    h = self.activation(self._norm(h, n.norm2, train=train))
    h = nn.Dropout(rate=self.dropout, deterministic=not train)(h)
    h = self._conv(out_ch, 3, self.out_kernel_init, n.conv2)(h)

    skip = upsample_nearest(x) if self.resample == "up" else x
    if self.resample != "none" or x.shape[-1] != out_ch:
      skip = self._conv(out_ch, self.shortcut_kernel, self.kernel_init, n.shortcut)(skip)
    if self.resample == "down":
      h, skip = mean_pool(h), mean_pool(skip)
    return skip + h


def ddpm_res_block(features: int | None = None, *, dropout: float = 0.0, num_groups: int = 32,
                   norm_eps: float = 1e-6, dtype: Dtype = jnp.float32,
                   param_dtype: Dtype = jnp.float32, name: str | None = None) -> ResBlock:
  """The DDPM U-Net's `ResBlock`: group norm (epsilon `norm_eps`; Stable Diffusion's 1e-5),
  swish, timestep embedding, dropout, 1x1 shortcut, the DDPM initialisation (last conv zero)
  and the official checkpoints' parameter names."""
  return ResBlock(features=features, norm="group", num_groups=num_groups, activation=nn.swish,
                  dropout=dropout, kernel_init=default_init(1.0), out_kernel_init=default_init(0.0),
                  names=DDPM_NAMES, norm_eps=norm_eps, dtype=dtype, param_dtype=param_dtype,
                  name=name)


def upsample_nearest(x: Array) -> Array:
  """2x nearest-neighbour upsampling of ``[B, H, W, C]``: ``y[:, i, j] = x[:, i // 2, j // 2]``.

  A broadcast and a reshape, whose gradient is a 2x2 sum. ``jax.image.resize(..., "nearest")``
  gives the same values through a gather, whose gradient is a scatter-add, several times slower
  on CPU (docs/guide/performance.md).
  """
  b, h, w, c = x.shape
  return jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(
      b, 2 * h, 2 * w, c)


def mean_pool(x: Array) -> Array:
  """2x2 mean pooling (stride 2) of ``[B, H, W, C]``."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


class AttnBlock(nn.Module):
  """Single-head self-attention over all ``H * W`` positions, residual.

  Attributes:
    num_groups: Groups of the input group normalisation.
    norm_eps: Epsilon of the group normalisation.
    dtype: Compute dtype (logits and softmax are float32).
    param_dtype: Parameter dtype.
  """

  num_groups: int = 32
  norm_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Applies attention to ``x`` of shape ``[B, H, W, C]``."""
    x = x.astype(self.dtype)
    b, hgt, wid, c = x.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    h = Norm("group", self.num_groups, epsilon=self.norm_eps, name="norm", **kw)(x)
    q = ddpm_dense(c, name="q", **kw)(h).reshape(b, hgt * wid, c)
    k = ddpm_dense(c, name="k", **kw)(h).reshape(b, hgt * wid, c)
    v = ddpm_dense(c, name="v", **kw)(h).reshape(b, hgt * wid, c)

    logits = jnp.einsum("bic,bjc->bij", q, k, preferred_element_type=jnp.float32) * (c**-0.5)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    h = jnp.einsum("bij,bjc->bic", weights, v).reshape(b, hgt, wid, c)
    h = ddpm_dense(c, init_scale=0.0, name="proj_out", **kw)(h)
    return x + h


class CrossAttnBlock(nn.Module):
  """Multi-head cross-attention from a feature map to a context sequence, residual.

  Queries come from the group-normalised feature map, keys and values from the context
  ``[B, L, D]`` (text-encoder tokens: latent diffusion's conditioning); the output projection is
  zero-initialised, so the block starts as the identity. Heads split the ``C`` channels, so
  the parameter count does not depend on ``num_heads``: ``2 C^2 + 2 D C + 6 C`` (norm ``2C``;
  ``q`` and ``proj_out`` ``C^2 + C`` each; ``k`` and ``v`` ``D C + C`` each).

  Attributes:
    num_groups: Groups of the feature map's group normalisation.
    num_heads: Attention heads; must divide the channel count.
    dtype: Compute dtype (logits and softmax are float32).
    param_dtype: Parameter dtype.
  """

  num_groups: int = 32
  num_heads: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, context: Array, image_context: Array | None = None,
               image_scale: float = 1.0) -> Array:
    """Attends from ``x`` ``[B, H, W, C]`` to ``context`` ``[B, L, D]``; returns ``[B, H, W, C]``.

    With ``image_context`` ``[B, N, D]`` (IP-Adapter's image tokens, Ye et al. 2023) the same
    queries also attend to it through keys and values of their own (``k_ip``, ``v_ip``), and
    ``proj_out`` reads ``Attn(q, k, v) + image_scale Attn(q, k_ip, v_ip)`` (decoupled
    cross-attention). Without it the block is unchanged.

    Raises:
      ValueError: ``context`` is not ``[B, L, D]`` with the batch size of ``x``, or
        ``num_heads`` does not divide ``C``.
    """
    x = x.astype(self.dtype)
    b, hgt, wid, c = x.shape
    if context.ndim != 3 or context.shape[0] != b:
      raise ValueError(f"context must have shape [B, L, D] with B={b}, got shape "
                       f"{context.shape}.")
    if c % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide the channel count {c}.")
    heads, d = self.num_heads, c // self.num_heads
    length = context.shape[1]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    context = context.astype(self.dtype)

    h = Norm("group", self.num_groups, name="norm", **kw)(x)
    q = ddpm_dense(c, name="q", **kw)(h).reshape(b, hgt * wid, heads, d)
    k = ddpm_dense(c, name="k", **kw)(context).reshape(b, length, heads, d)
    v = ddpm_dense(c, name="v", **kw)(context).reshape(b, length, heads, d)

    h = _attend(q, k, v, self.dtype).reshape(b, hgt, wid, c)
    if image_context is not None:
      if image_context.ndim != 3 or image_context.shape[0] != b:
        raise ValueError(f"image_context must have shape [B, N, D] with B={b}, got shape "
                         f"{image_context.shape}.")
      tokens = image_context.shape[1]
      image_context = image_context.astype(self.dtype)
      k_ip = ddpm_dense(c, name="k_ip", **kw)(image_context).reshape(b, tokens, heads, d)
      v_ip = ddpm_dense(c, name="v_ip", **kw)(image_context).reshape(b, tokens, heads, d)
      h = h + image_scale * _attend(q, k_ip, v_ip, self.dtype).reshape(b, hgt, wid, c)
    h = ddpm_dense(c, init_scale=0.0, name="proj_out", **kw)(h)
    return x + h


def _attend(q: Array, k: Array, v: Array, dtype: Dtype) -> Array:
  """softmax(q k^T / sqrt(d)) v over heads: [B, I, h, d], [B, J, h, d] -> [B, I, h, d]
  (logits and softmax in float32)."""
  d = q.shape[-1]
  logits = jnp.einsum("bihd,bjhd->bhij", q, k, preferred_element_type=jnp.float32) * (d**-0.5)
  weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
  return jnp.einsum("bhij,bjhd->bihd", weights, v)


class Downsample(nn.Module):
  """Halves the spatial size.

  Attributes:
    with_conv: Use a stride-2 3x3 conv; otherwise 2x2 average pooling.
    padding: Padding of the conv (diffusers' ``downsample_padding``): 0 pads one row and
      column at the bottom and right only ('SAME' on an even size; the DDPM and LDM
      checkpoints), 1 pads one on every side (Stable Diffusion's U-Net). On an even input
      the two read the same pixels shifted by one: their outputs differ.
    dtype: Compute dtype.
    param_dtype: Parameter dtype.
  """

  with_conv: bool = True
  padding: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Downsamples ``x`` ``[B, H, W, C]`` to ``[B, H/2, W/2, C]``.

    Raises:
      ValueError: a padding other than 0 or 1.
    """
    x = x.astype(self.dtype)
    if not self.with_conv:
      return mean_pool(x)
    if self.padding not in (0, 1):
      raise ValueError(f"Downsample padding must be 0 (bottom/right, 'SAME') or 1 (every "
                       f"side), got {self.padding}")
    return ddpm_conv(x.shape[-1], 3, strides=2, dtype=self.dtype, param_dtype=self.param_dtype,
                     padding="SAME" if self.padding == 0 else ((1, 1), (1, 1)), name="conv")(x)


class Upsample(nn.Module):
  """Doubles the spatial size by nearest-neighbour upsampling.

  Attributes:
    with_conv: Follow the upsampling with a 3x3 conv.
    dtype: Compute dtype.
    param_dtype: Parameter dtype.
  """

  with_conv: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Upsamples ``x`` of shape ``[B, H, W, C]`` to ``[B, 2H, 2W, C]``."""
    x = upsample_nearest(x.astype(self.dtype))
    if self.with_conv:
      x = ddpm_conv(
          x.shape[-1],
          3,
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          name="conv",
      )(x)
    return x
