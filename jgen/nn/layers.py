"""Building blocks of the DDPM U-Net (Ho et al., 2020).

All tensors are NHWC. Every module takes ``dtype`` (the compute dtype) and
``param_dtype`` (the dtype parameters are stored in), so bfloat16 compute with
float32 parameters works. Group normalisation statistics and attention
softmaxes are always computed in float32.

Weights use the initialisation of the official DDPM code: variance scaling
with ``fan_avg`` and a uniform distribution (scale 1), zero biases. The last
convolution of each residual branch (``ResnetBlock.conv2`` and
``AttnBlock.proj_out``) is zero-initialised (DDPM uses scale 1e-10, which is
zero for all practical purposes), so every block starts as the identity.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any

__all__ = [
    "AttnBlock",
    "Downsample",
    "GroupNorm32",
    "ResnetBlock",
    "Upsample",
    "ddpm_conv",
    "ddpm_dense",
    "default_init",
    "timestep_embedding",
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


def timestep_embedding(t: Array, dim: int, max_period: float = 10000.0) -> Array:
  """Sinusoidal timestep embedding as in DDPM / the Transformer.

  The first ``dim // 2`` features are ``sin(t * f_i)`` and the next
  ``dim // 2`` are ``cos(t * f_i)`` with frequencies
  ``f_i = max_period ** (-i / (dim // 2 - 1))`` for ``i = 0 .. dim//2 - 1``
  (the DDPM convention). An odd ``dim`` is padded with one zero feature.

  Args:
    t: Timesteps of shape ``[B]``, integer or floating point.
    dim: Embedding size, at least 2.
    max_period: Controls the lowest frequency.

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
  exponent = math.log(max_period) / max(half - 1, 1)
  freqs = jnp.exp(-exponent * jnp.arange(half, dtype=jnp.float32))
  args = t.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
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
    name: str | None = None,
) -> nn.Conv:
  """Builds a square-kernel 'SAME' convolution with the DDPM init."""
  return nn.Conv(
      features,
      (kernel, kernel),
      strides=(strides, strides),
      padding="SAME",
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


class GroupNorm32(nn.Module):
  """Group normalisation computed in float32, cast back to ``dtype``.

  Attributes:
    num_groups: Number of groups; must divide the channel count.
    epsilon: Numerical stability constant.
    dtype: Output dtype.
    param_dtype: Dtype of the scale and bias parameters.
  """

  num_groups: int = 32
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Normalises ``x`` of shape ``[..., C]`` over groups of channels.

    Raises:
      ValueError: If ``num_groups`` does not divide the channel count.
    """
    channels = x.shape[-1]
    if channels % self.num_groups != 0:
      raise ValueError(f"num_groups={self.num_groups} must divide the channel "
                       f"count {channels}.")
    y = nn.GroupNorm(
        num_groups=self.num_groups,
        epsilon=self.epsilon,
        dtype=jnp.float32,
        param_dtype=self.param_dtype,
        name="norm",
    )(x.astype(jnp.float32))
    return y.astype(self.dtype)


class ResnetBlock(nn.Module):
  """DDPM residual block with timestep conditioning.

  ``GroupNorm -> swish -> conv3x3 -> + Dense(swish(temb)) -> GroupNorm ->
  swish -> dropout -> conv3x3`` (the last conv zero-initialised), added to
  the input, which goes through a 1x1 conv when the channel count changes.

  Attributes:
    out_ch: Output channels; ``None`` keeps the input channel count.
    dropout: Dropout rate, using the ``'dropout'`` rng collection.
    num_groups: Groups of the group normalisations.
    dtype: Compute dtype.
    param_dtype: Parameter dtype.
  """

  out_ch: int | None = None
  dropout: float = 0.0
  num_groups: int = 32
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, temb: Array, *, train: bool) -> Array:
    """Applies the block.

    Args:
      x: Features ``[B, H, W, C_in]``.
      temb: Timestep embedding ``[B, D]``.
      train: Enables dropout when True.

    Returns:
      Features ``[B, H, W, out_ch]`` in ``dtype``.
    """
    x = x.astype(self.dtype)
    out_ch = self.out_ch if self.out_ch is not None else x.shape[-1]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = dict(num_groups=self.num_groups, **kw)

    h = nn.swish(GroupNorm32(name="norm1", **norm)(x))
    h = ddpm_conv(out_ch, 3, name="conv1", **kw)(h)
    temb = nn.swish(temb.astype(self.dtype))
    t = ddpm_dense(out_ch, name="temb_proj", **kw)(temb)
    h = h + t[:, None, None, :]
    h = nn.swish(GroupNorm32(name="norm2", **norm)(h))
    h = nn.Dropout(rate=self.dropout, deterministic=not train)(h)
    h = ddpm_conv(out_ch, 3, init_scale=0.0, name="conv2", **kw)(h)

    if x.shape[-1] != out_ch:
      x = ddpm_conv(out_ch, 1, name="nin_shortcut", **kw)(x)
    return x + h


class AttnBlock(nn.Module):
  """Single-head self-attention over all ``H * W`` positions, residual.

  Attributes:
    num_groups: Groups of the input group normalisation.
    dtype: Compute dtype (logits and softmax are float32).
    param_dtype: Parameter dtype.
  """

  num_groups: int = 32
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Applies attention to ``x`` of shape ``[B, H, W, C]``."""
    x = x.astype(self.dtype)
    b, hgt, wid, c = x.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    h = GroupNorm32(num_groups=self.num_groups, name="norm", **kw)(x)
    q = ddpm_dense(c, name="q", **kw)(h).reshape(b, hgt * wid, c)
    k = ddpm_dense(c, name="k", **kw)(h).reshape(b, hgt * wid, c)
    v = ddpm_dense(c, name="v", **kw)(h).reshape(b, hgt * wid, c)

    logits = jnp.einsum("bic,bjc->bij", q, k, preferred_element_type=jnp.float32) * (c**-0.5)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    h = jnp.einsum("bij,bjc->bic", weights, v).reshape(b, hgt, wid, c)
    h = ddpm_dense(c, init_scale=0.0, name="proj_out", **kw)(h)
    return x + h


class Downsample(nn.Module):
  """Halves the spatial size.

  Attributes:
    with_conv: Use a stride-2 3x3 conv; otherwise 2x2 average pooling.
    dtype: Compute dtype.
    param_dtype: Parameter dtype.
  """

  with_conv: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Downsamples ``x`` ``[B, H, W, C]`` to ``[B, H/2, W/2, C]``."""
    x = x.astype(self.dtype)
    if self.with_conv:
      return ddpm_conv(
          x.shape[-1],
          3,
          strides=2,
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          name="conv",
      )(x)
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


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
    x = x.astype(self.dtype)
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    if self.with_conv:
      x = ddpm_conv(
          x.shape[-1],
          3,
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          name="conv",
      )(x)
    return x
