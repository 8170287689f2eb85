"""Image quality of images in [-1, 1]."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["psnr"]


def psnr(x_hat: jax.Array, x: jax.Array) -> jax.Array:
  """Per-image PSNR in dB of images in [-1, 1], shape `[B, ...] -> [B]`.

  PSNR = 10 log10(1 / MSE) with MSE measured on [0, 1] (the [-1, 1] MSE over 4, peak-to-peak
  2), `x_hat` clipped to [-1, 1] first; MSE is floored at 1e-10, so an exact image scores 100 dB.
  """
  diff = jnp.clip(x_hat, -1.0, 1.0).astype(jnp.float32) - x.astype(jnp.float32)
  mse01 = jnp.mean(jnp.square(diff).reshape(diff.shape[0], -1), axis=-1) / 4.0
  return 10.0 * jnp.log10(1.0 / jnp.maximum(mse01, 1e-10))
