"""Generators and discriminators of the GAN family: DCGAN, the WGAN-GP ResNet, toy MLPs.

One interface for all: `G(z, labels=None, *, train) -> images [B, H, W, C]` in [-1, 1] (tanh)
and `D(x, labels=None, *, train) -> scores [B]` (logits for the BCE losses, raw critic values
for Wasserstein). `labels` (int `[B]`) are used only when `num_classes > 0`: the generator
concatenates a learned label embedding to z; the discriminator either projects (Miyato & Koyama
2018: D(x, y) = psi(phi(x)) + embed(y) . phi(x), 'projection') or reads one-hot label planes
concatenated to the image channels ('concat', Mirza & Osindero 2014).

Normalization is a field: 'batch' (running statistics in the `batch_stats` collection, updated
when `train=True`), 'layer' (over H, W, C: the WGAN-GP critic's choice, since batch norm breaks
the per-example gradient penalty) or 'none'.

DCGAN (Radford et al. 2016): any power-of-two size >= 8 and any number of channels; stride-2
4x4 (transposed) convolutions, ReLU in G, LeakyReLU(0.2) in D, no normalization on D's first
layer. ResNet (Gulrajani et al. 2017, CIFAR-10): pre-activation residual blocks with nearest
upsampling in G and mean pooling in D (`jgen.nn.layers.ResBlock` with ReLU); at 32x32 and 128
features it is the paper's network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.nn.layers import Norm, ResBlock, ResBlockNames

Array = jax.Array
Dtype = Any

__all__ = [
    "DCGANDiscriminator", "DCGANGenerator", "MLPDiscriminator", "MLPGenerator", "NORMS",
    "ResNetCritic", "ResNetGenerator", "num_resamplings",
]

NORMS = ("batch", "layer", "none")


def num_resamplings(image_size: int) -> int:
  """Stride-2 stages between a 4x4 map and `image_size` (a power of two >= 8)."""
  if image_size < 8 or image_size & (image_size - 1):
    raise ValueError(f"GAN image size must be a power of two >= 8, got {image_size}")
  return int(math.log2(image_size)) - 2


def _with_label(z: Array, labels: Array | None, num_classes: int, embed_dim: int,
                dtype: Dtype) -> Array:
  if not num_classes:
    return z
  if labels is None:
    raise ValueError("a class-conditional generator needs labels")
  emb = nn.Embed(num_classes, embed_dim, name="label_embed")(labels)
  return jnp.concatenate([z, emb.astype(z.dtype)], axis=-1).astype(dtype)


def _concat_label_planes(x: Array, labels: Array | None, num_classes: int) -> Array:
  if labels is None:
    raise ValueError("a class-conditional discriminator needs labels")
  planes = jax.nn.one_hot(labels, num_classes, dtype=x.dtype)[:, None, None, :]
  return jnp.concatenate([x, jnp.broadcast_to(planes, (*x.shape[:3], num_classes))], axis=-1)


def _project(out: Array, h: Array, labels: Array | None, num_classes: int) -> Array:
  """`out + embed(y) . h` (the projection discriminator's class term)."""
  if labels is None:
    raise ValueError("a class-conditional discriminator needs labels")
  emb = nn.Embed(num_classes, h.shape[-1], name="label_projection")(labels)
  return out + jnp.sum(emb.astype(jnp.float32) * h.astype(jnp.float32), axis=-1)


def _check_conditioning(conditioning: str):
  if conditioning not in ("projection", "concat"):
    raise ValueError(f"unknown conditioning {conditioning!r}; choose 'projection' or 'concat'")


class DCGANGenerator(nn.Module):
  """z -> Dense 4x4xF -> stride-2 transposed convs (features halving) -> tanh image.

  Attributes:
    image_size: output size, a power of two >= 8.
    channels: output channels (1 or 3).
    features: features of the last hidden (highest-resolution) layer; the 4x4 map has
      `features * 2 ** (n - 1)` for n = log2(image_size) - 2 upsamplings (64 at 64x64: the
      paper's 512-256-128-64).
    num_classes: > 0 for a class-conditional generator.
    embed_dim: size of the label embedding concatenated to z.
    norm: 'batch' (the paper) or 'none'.
  """

  image_size: int
  channels: int
  features: int = 64
  num_classes: int = 0
  embed_dim: int = 16
  norm: str = "batch"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: Array, labels: Array | None = None, *, train: bool) -> Array:
    n = num_resamplings(self.image_size)
    h = _with_label(z, labels, self.num_classes, self.embed_dim, self.dtype)
    f = self.features * 2 ** (n - 1)
    h = nn.Dense(4 * 4 * f, dtype=self.dtype)(h).reshape(-1, 4, 4, f)
    h = nn.relu(Norm(self.norm, dtype=self.dtype)(h, train=train))
    for _ in range(n - 1):
      f //= 2
      h = nn.ConvTranspose(f, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype)(h)
      h = nn.relu(Norm(self.norm, dtype=self.dtype)(h, train=train))
    h = nn.ConvTranspose(self.channels, (4, 4), strides=(2, 2), padding="SAME",
                         dtype=self.dtype)(h)
    return jnp.tanh(h.astype(jnp.float32))


class DCGANDiscriminator(nn.Module):
  """Stride-2 4x4 convs (features doubling) down to 4x4, LeakyReLU(0.2), then a linear score.

  Attributes:
    features: features of the first layer.
    num_classes: > 0 for a class-conditional discriminator.
    conditioning: 'projection' or 'concat'.
    norm: 'batch' (the paper), 'layer' or 'none'; never on the first layer.
  """

  features: int = 64
  num_classes: int = 0
  conditioning: str = "projection"
  norm: str = "batch"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, labels: Array | None = None, *, train: bool) -> Array:
    n = num_resamplings(x.shape[1])
    if self.num_classes:
      _check_conditioning(self.conditioning)
      if self.conditioning == "concat":
        x = _concat_label_planes(x, labels, self.num_classes)
    h = x.astype(self.dtype)
    f = self.features
    for i in range(n):
      h = nn.Conv(f, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype)(h)
      if i > 0:
        h = Norm(self.norm, dtype=self.dtype)(h, train=train)
      h = nn.leaky_relu(h, 0.2)
      f *= 2
    h = h.reshape(h.shape[0], -1)
    out = nn.Dense(1, dtype=self.dtype)(h)[:, 0].astype(jnp.float32)
    if self.num_classes and self.conditioning == "projection":
      out = _project(out, h, labels, self.num_classes)
    return out


def _res_block(features: int, resample: str, norm: str, dtype: Dtype, *,
               first: bool = False) -> ResBlock:
  """WGAN-GP's pre-activation block: [norm, relu, conv3x3] x 2, resampled 'up' (nearest, before
  the first conv and the 1x1 shortcut) or 'down' (mean pooling after the second conv and the
  shortcut); `first` is the critic's first block (no activation before it reads the image)."""
  return ResBlock(features, norm=norm, activation=nn.relu, resample=resample, first=first,
                  names=ResBlockNames(shortcut="shortcut"), dtype=dtype)


class ResNetGenerator(nn.Module):
  """WGAN-GP's CIFAR-10 generator: Dense 4x4xF, up-blocks to `image_size`, norm, relu, conv, tanh.

  Attributes:
    image_size: output size, power of two >= 8 (32: three up-blocks, the paper).
    channels: output channels.
    features: features of every block (128 in the paper).
    num_classes, embed_dim: class conditioning by a label embedding concatenated to z.
    norm: 'batch' (the paper) or 'none'.
  """

  image_size: int
  channels: int = 3
  features: int = 128
  num_classes: int = 0
  embed_dim: int = 16
  norm: str = "batch"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: Array, labels: Array | None = None, *, train: bool) -> Array:
    n = num_resamplings(self.image_size)
    h = _with_label(z, labels, self.num_classes, self.embed_dim, self.dtype)
    h = nn.Dense(4 * 4 * self.features, dtype=self.dtype)(h).reshape(-1, 4, 4, self.features)
    for _ in range(n):
      h = _res_block(self.features, "up", self.norm, self.dtype)(h, train=train)
    h = nn.relu(Norm(self.norm, dtype=self.dtype)(h, train=train))
    h = nn.Conv(self.channels, (3, 3), dtype=self.dtype)(h)
    return jnp.tanh(h.astype(jnp.float32))


class ResNetCritic(nn.Module):
  """WGAN-GP's CIFAR-10 critic: down-blocks to 8x8, two plain blocks, relu, mean pool, linear.

  At 32x32: first block (32 -> 16), down block (16 -> 8), two blocks at 8x8 (the paper).

  Attributes:
    features: features of every block (128 in the paper).
    num_classes, conditioning: class conditioning ('projection' or 'concat').
    norm: 'none' (the paper), 'layer' or 'batch'.
  """

  features: int = 128
  num_classes: int = 0
  conditioning: str = "projection"
  norm: str = "none"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, labels: Array | None = None, *, train: bool) -> Array:
    n_down = max(1, num_resamplings(x.shape[1]) - 1)
    if self.num_classes:
      _check_conditioning(self.conditioning)
      if self.conditioning == "concat":
        x = _concat_label_planes(x, labels, self.num_classes)
    h = x.astype(self.dtype)
    for i in range(n_down):
      h = _res_block(self.features, "down", self.norm, self.dtype, first=i == 0)(
          h, train=train)
    for _ in range(2):
      h = _res_block(self.features, "none", self.norm, self.dtype)(h, train=train)
    h = jnp.mean(nn.relu(h), axis=(1, 2))
    out = nn.Dense(1, dtype=self.dtype)(h)[:, 0].astype(jnp.float32)
    if self.num_classes and self.conditioning == "projection":
      out = _project(out, h, labels, self.num_classes)
    return out


class MLPGenerator(nn.Module):
  """z -> ReLU MLP -> `out_dim` values (the 2-D toy generator; no output squashing)."""

  out_dim: int = 2
  hidden: Sequence[int] = (256, 256, 256)

  @nn.compact
  def __call__(self, z: Array, labels: Array | None = None, *, train: bool = False) -> Array:
    del labels, train
    h = z
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    return nn.Dense(self.out_dim)(h)


class MLPDiscriminator(nn.Module):
  """x -> ReLU MLP -> one score per example, `[B]`."""

  hidden: Sequence[int] = (256, 256, 256)

  @nn.compact
  def __call__(self, x: Array, labels: Array | None = None, *, train: bool = False) -> Array:
    del labels, train
    h = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    return nn.Dense(1)(h)[:, 0]
