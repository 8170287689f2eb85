"""The image-prompt projection of the IP-Adapter (Ye et al. 2023), `jgen.diffusion.ip_adapter`:
image features become the tokens the U-Net's decoupled image cross-attention reads."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ImageProjection"]


class ImageProjection(nn.Module):
  """Image features [B, F] -> N tokens [B, N, D]: Dense(N D), reshape, LayerNorm."""

  num_tokens: int
  dim: int

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    x = nn.Dense(self.num_tokens * self.dim, name="proj")(features.astype(jnp.float32))
    x = x.reshape(features.shape[0], self.num_tokens, self.dim)
    return nn.LayerNorm(name="norm")(x)
