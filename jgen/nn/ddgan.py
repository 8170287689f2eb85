"""The networks of the denoising diffusion GAN (Xiao, Kreis & Vahdat 2022), `jgen.gan.ddgan`.

The generator G(x_t, t, z) -> x0 is a U-Net with z mapped into its time embedding; the
discriminator D(x_{t-1}, x_t, t) scores a pair of consecutive noisy images at step t.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.nn.layers import ResBlock, default_init, timestep_embedding
from jgen.nn.progan import minibatch_stddev
from jgen.nn.unet import UNet

Array = jax.Array

__all__ = ["DDGANGenerator", "TimeConditionalDiscriminator"]


class DDGANGenerator(nn.Module):
  """G(x_t, t, z) -> x0 in [-1, 1]: a U-Net with z mapped into its time embedding.

  Mapping (the paper's): e = MLP(z / rms(z)), `1 + n_mlp` dense layers of `z_emb_dim` with
  SiLU after each; x0 = tanh(UNet(x_t, t, {"embedding": e})).

  Attributes:
    unet: the U-Net, built with `embedding_dim = z_emb_dim` (and no dropout).
    z_emb_dim: width of the mapping network.
    n_mlp: dense layers after the first one.
  """

  unet: UNet
  z_emb_dim: int = 256
  n_mlp: int = 4

  @nn.compact
  def __call__(self, x_t: Array, t: Array, z: Array, *, train: bool) -> Array:
    z = z.astype(jnp.float32)
    h = z * jax.lax.rsqrt(jnp.mean(jnp.square(z), axis=-1, keepdims=True) + 1e-8)
    for i in range(1 + self.n_mlp):
      h = nn.silu(nn.Dense(self.z_emb_dim, kernel_init=default_init(1.0), name=f"mapping_{i}",
                           dtype=self.unet.dtype)(h))
    out = self.unet(x_t, t, {"embedding": h}, train=train)
    return jnp.tanh(out)


class TimeConditionalDiscriminator(nn.Module):
  """D(x_{t-1}, x_t, t) -> logits [B] (the reference's small discriminator, jgen blocks).

  e = Dense(LReLU(Dense(sinusoid(t)))); h = Conv1x1([x_{t-1}, x_t]); for each level a
  `ResBlock` (no norm, LeakyReLU 0.2, e projected and added after its first conv, last conv
  zero-initialised), the first at full resolution and each later one halving it; then minibatch
  stddev, a 3x3 conv, LeakyReLU, a sum over positions and a linear score.

  Attributes:
    ch: channels of the first conv.
    ch_mult: channels per level (times `ch`); levels after the first downsample.
    t_emb_dim: size of the time embedding.
    mbstd_group: minibatch-stddev group size (0: off).
  """

  ch: int = 128
  ch_mult: Sequence[int] = (1, 2, 4, 4)
  t_emb_dim: int = 256
  mbstd_group: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_prev: Array, x_t: Array, t: Array, *, train: bool) -> Array:
    act = lambda v: nn.leaky_relu(v, 0.2)
    dense = lambda f, name: nn.Dense(f, kernel_init=default_init(1.0), name=name,
                                     dtype=self.dtype)
    conv = lambda f, k, name, scale=1.0: nn.Conv(f, (k, k), padding="SAME", name=name,
                                                 kernel_init=default_init(scale),
                                                 dtype=self.dtype)
    emb = dense(self.t_emb_dim, "t_dense1")(act(dense(self.t_emb_dim, "t_dense0")(
        timestep_embedding(t, self.t_emb_dim))))
    h = jnp.concatenate([x_prev, x_t], axis=-1).astype(self.dtype)
    h = conv(self.ch, 1, "conv_in")(h)
    for i, mult in enumerate(self.ch_mult):
      h = ResBlock(self.ch * mult, norm="none", activation=act,
                   resample="none" if i == 0 else "down", kernel_init=default_init(1.0),
                   out_kernel_init=default_init(0.0), dtype=self.dtype,
                   name=f"block_{i}")(h, emb, train=train)
    if self.mbstd_group:
      h = minibatch_stddev(h, self.mbstd_group)
    h = act(conv(self.ch * self.ch_mult[-1], 3, "conv_out", 0.0)(h))
    h = jnp.sum(h.astype(jnp.promote_types(h.dtype, jnp.float32)), axis=(1, 2))
    return nn.Dense(1, kernel_init=default_init(1.0), name="score")(h)[:, 0]
