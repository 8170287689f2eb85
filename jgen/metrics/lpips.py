"""LPIPS, the learned perceptual image patch similarity (Zhang et al. 2018), VGG variant.

    d(x0, x1) = sum_l mean_{h,w} sum_c w_lc (f0_lhwc - f1_lhwc)^2,

where f_l are the VGG16 activations after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3
(torchvision's ``features`` trunk, 3x3 convs with bias, 2x2 max pools between stages), each
unit-normalized over channels (``f / (||f||_2 + 1e-10)``), and w_l >= 0 the learned 1x1 linear
heads of LPIPS v0.1. Inputs are images in [-1, 1], first shifted and scaled by the LPIPS
constants ``(x - shift) / scale`` (shift = (-.030, -.088, -.188), scale = (.458, .448, .450),
ImageNet statistics expressed on the [-1, 1] range).

Weights: `jgen.metrics.weights.lpips_variables(vgg_path, lin_path)` reads torchvision's
``vgg16-397923af.pth`` and the lpips package's ``weights/v0.1/vgg.pth`` (without torch).

    variables = lpips_variables("vgg16-397923af.pth", "vgg.pth")
    distance = jax.jit(LPIPS().apply)(variables, x0, x1)    # [N]
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.metrics.weights import lpips_variables

__all__ = ["LPIPS", "LPIPS_SCALE", "LPIPS_SHIFT", "VGG16Features", "VGG16_STAGES",
           "lpips_variables", "unit_normalize"]

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# Output channels of the 13 convolutions of VGG16, by stage; LPIPS taps the last of each stage.
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def unit_normalize(x: jax.Array, eps: float = 1e-10) -> jax.Array:
  """x / (||x||_2 over channels + eps), as the LPIPS reference."""
  return x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + eps)


class VGG16Features(nn.Module):
  """torchvision's VGG16 ``features`` trunk up to relu5_3, returning relu1_2 .. relu5_3."""

  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    x = x.astype(self.dtype)
    taps = []
    index = 0
    for stage, channels in enumerate(VGG16_STAGES):
      if stage:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for features in channels:
        x = nn.relu(nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                            name=f"conv{index}")(x))
        index += 1
      taps.append(x.astype(jnp.float32))
    return taps


class LPIPS(nn.Module):
  """LPIPS-VGG distance between two image batches ``[N, H, W, 3]`` in [-1, 1] -> ``[N]``.

  Parameters: ``vgg/conv0..conv12`` (VGG16 3x3 convs, HWIO kernel + bias) and ``lin0..lin4``
  (the non-negative per-channel weights of the five heads).

  Attributes:
    dtype: compute dtype of the VGG trunk.
  """

  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.vgg = VGG16Features(self.dtype)
    self.lins = [self.param(f"lin{k}", nn.initializers.constant(1.0 / stage[-1]), (stage[-1],))
                 for k, stage in enumerate(VGG16_STAGES)]

  def features(self, x: jax.Array) -> list[jax.Array]:
    """The five VGG16 activations (relu1_2 .. relu5_3) of images in [-1, 1]."""
    shift = jnp.asarray(LPIPS_SHIFT, jnp.float32)
    scale = jnp.asarray(LPIPS_SCALE, jnp.float32)
    return self.vgg((x.astype(jnp.float32) - shift) / scale)

  def __call__(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
    if x0.shape != x1.shape or x0.shape[-1] != 3:
      raise ValueError(f"expected two [N, H, W, 3] batches, got {x0.shape} and {x1.shape}")
    n = x0.shape[0]
    taps = self.features(jnp.concatenate([x0, x1], axis=0))
    total = jnp.zeros((n,), jnp.float32)
    for weight, feats in zip(self.lins, taps):
      diff = (unit_normalize(feats[:n]) - unit_normalize(feats[n:])) ** 2
      total = total + jnp.mean(jnp.sum(diff * weight, axis=-1), axis=(1, 2))
    return total
