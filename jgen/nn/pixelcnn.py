"""Gated PixelCNN (van den Oord et al. 2016) built from PixelCNN++'s shifted convolutions.

Two streams run side by side, with no masks and no blind spot:

* the **vertical stack** ``v``: the features at (i, j) depend only on pixels in rows < i (a
  widening cone of every row above);
* the **horizontal stack** ``h``: the features at (i, j) depend only on pixels strictly before
  (i, j) in raster order (rows < i, and row i left of j).

Causality comes from where the convolutions are padded, not from masked kernels:

* `down_shifted_conv` with kernel (kh, kw): padded kh - 1 rows above and (kw - 1) / 2 columns on
  each side, so output (i, j) reads rows i - kh + 1 .. i, columns j - (kw-1)/2 .. j + (kw-1)/2;
* `down_right_shifted_conv` with kernel (kh, kw): padded kh - 1 above and kw - 1 on the left, so
  output (i, j) reads rows i - kh + 1 .. i, columns j - kw + 1 .. j;
* `down_shift` / `right_shift` move a map one row down / one column right (zeros enter).

The first layer (van den Oord's type 'A', which must not see the current pixel):
``v = down_shift(down_shifted_conv(x, (kh, k)))`` and
``h = right_shift(down_right_shifted_conv(x, (1, kh)))``, with kh = k // 2 + 1. Every later
`GatedLayer` (type 'B', which may see its own position of the streams, since the streams already
exclude the current pixel) keeps both invariants: v reads v at rows <= i; h reads h at row i,
columns <= j, and v's features at row i (which see rows < i only). Each stream goes through the
gate ``tanh(a) * sigmoid(b)`` with the class embedding added to a and b as a bias
(van den Oord's ``V^T h`` conditioning), and a residual 1x1 projection. The output head reads the
horizontal stack only, so the output at pixel i depends on pixels < i: the logistic mixture of
pixel i's channels (the order of a pixel's RGB channels is the mixture's linear channel
coefficients, `jgen.ops.likelihoods.LogisticMixture`, so no channel masks are needed).

Receptive field: after the first layer v covers the kh rows above and (k - 1) / 2 columns on
each side of the pixel, h the kh pixels to its left; each gated layer adds kh - 1 rows above and
(k - 1) / 2 columns on each side to v, and kh - 1 columns to the left to h's row part. An
H x W image is seen whole (every earlier pixel) from about (W - 1) / ((k - 1) / 2) layers on:
16x16 digits need about 8 layers with k = 5; `tests/autoregressive` checks the dependence
set exactly on a small image.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.ops.likelihoods import mixture_num_params

__all__ = ["GatedLayer", "PixelCNN", "down_right_shifted_conv", "down_shift",
           "down_shifted_conv", "right_shift"]

Array = jax.Array


def down_shift(x: Array) -> Array:
  """[B, H, W, C] moved one row down: row 0 is zeros, row i is x's row i - 1."""
  return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def right_shift(x: Array) -> Array:
  """[B, H, W, C] moved one column right: column 0 is zeros, column j is x's column j - 1."""
  return jnp.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]


def _check_kernel(kernel: tuple[int, int], *, centred: bool) -> None:
  kh, kw = kernel
  if kh < 1 or kw < 1 or (centred and kw % 2 == 0):
    raise ValueError(f"a shifted convolution needs a kernel (kh >= 1, kw >= 1"
                     f"{', kw odd' if centred else ''}), got {kernel}")


def down_shifted_conv(features: int, kernel: tuple[int, int], *, name: str | None = None,
                      dtype=jnp.float32):
  """A conv whose output (i, j) reads rows i-kh+1..i, columns j-(kw-1)/2..j+(kw-1)/2.

  Returns a function `x -> conv(pad(x))` made of one `nn.Conv` (call inside a compact module).
  """
  _check_kernel(kernel, centred=True)
  kh, kw = kernel
  conv = nn.Conv(features, kernel, padding="VALID", dtype=dtype, name=name)
  return lambda x: conv(jnp.pad(x, ((0, 0), (kh - 1, 0), ((kw - 1) // 2, (kw - 1) // 2),
                                    (0, 0))))


def down_right_shifted_conv(features: int, kernel: tuple[int, int], *, name: str | None = None,
                            dtype=jnp.float32):
  """A conv whose output (i, j) reads rows i-kh+1..i, columns j-kw+1..j (see
  `down_shifted_conv`)."""
  _check_kernel(kernel, centred=False)
  kh, kw = kernel
  conv = nn.Conv(features, kernel, padding="VALID", dtype=dtype, name=name)
  return lambda x: conv(jnp.pad(x, ((0, 0), (kh - 1, 0), (kw - 1, 0), (0, 0))))


def _gate(x: Array) -> Array:
  a, b = jnp.split(x, 2, axis=-1)
  return jnp.tanh(a) * jax.nn.sigmoid(b)


class GatedLayer(nn.Module):
  """One gated PixelCNN layer (type 'B') on the vertical and horizontal streams.

  v' = v + W_v (tanh * sigmoid)(conv_v(v) + bias_v(cond))
  h' = h + W_h (tanh * sigmoid)(conv_h(h) + W_vh conv_v(v) + bias_h(cond))

  conv_v is a `down_shifted_conv` (kh, k) and conv_h a `down_right_shifted_conv` (1, kh) with
  kh = k // 2 + 1; dropout (PixelCNN++: 0.5 on CIFAR-10) acts on the gated features.

  Attributes:
    features: channels of both streams.
    kernel_size: k (odd).
    dropout: dropout rate on the gated features while training.
  """

  features: int
  kernel_size: int = 3
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, v: Array, h: Array, cond: Array | None = None, *, train: bool
               ) -> tuple[Array, Array]:
    f, k = self.features, self.kernel_size
    kh = k // 2 + 1
    v_feat = down_shifted_conv(2 * f, (kh, k), name="conv_v", dtype=self.dtype)(v)
    h_feat = (down_right_shifted_conv(2 * f, (1, kh), name="conv_h", dtype=self.dtype)(h)
              + nn.Dense(2 * f, dtype=self.dtype, name="v_to_h")(v_feat))
    if cond is not None:
      v_feat = v_feat + nn.Dense(2 * f, dtype=self.dtype, name="cond_v")(cond)[:, None, None]
      h_feat = h_feat + nn.Dense(2 * f, dtype=self.dtype, name="cond_h")(cond)[:, None, None]
    drop = nn.Dropout(self.dropout, deterministic=not train)
    v = v + nn.Dense(f, dtype=self.dtype, name="out_v")(drop(_gate(v_feat)))
    h = h + nn.Dense(f, dtype=self.dtype, name="out_h")(drop(_gate(h_feat)))
    return v, h


class PixelCNN(nn.Module):
  """Gated PixelCNN: images [B, H, W, C] in [-1, 1] -> logistic-mixture parameters per pixel.

  The output [B, H, W, K (1 + 2C + C(C-1)/2)] at pixel i depends only on pixels before i in
  raster order (see the module docstring); `jgen.ops.likelihoods.split_mixture_params`
  reads it.

  Attributes:
    channels: C of the images.
    features: channels of both streams.
    num_layers: gated layers after the first ('A') layer.
    kernel_size: k, odd (the vertical kernel is (k // 2 + 1) x k).
    num_mixtures: K logistic components per pixel.
    num_classes: label classes (0: unconditional); a label embedding of `cond_dim` enters
      every gated layer as a bias.
    null_class: one more embedding row, label `num_classes`: the learned null class of
      classifier-free guidance (`jgen.nn.conditioning`); False keeps `num_classes` rows.
    cond_dim: size of the label embedding.
    dropout: dropout rate of the gated layers.
    dtype: compute dtype (parameters stay float32).
  """

  channels: int = 1
  features: int = 64
  num_layers: int = 8
  kernel_size: int = 3
  num_mixtures: int = 5
  num_classes: int = 0
  null_class: bool = False
  cond_dim: int = 32
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @property
  def condition_keys(self) -> tuple[str, ...]:
    return ("label",) if self.num_classes > 0 else ()

  @property
  def receptive_rows(self) -> int:
    """R: the output at row i reads image rows i - R + 1 .. i only.

    The first layer's v reads the kh = k // 2 + 1 rows above; each of the L gated layers'
    vertical convolutions adds kh - 1 rows, and the last one's features enter h, so
    R = kh + L (kh - 1) + 1. The windowed sampler runs the network on R rows per step.
    """
    kh = self.kernel_size // 2 + 1
    return kh + self.num_layers * (kh - 1) + 1

  @nn.compact
  def __call__(self, x: Array, conditions: dict[str, Array] | None = None, *,
               train: bool = False) -> Array:
    if x.ndim != 4 or x.shape[-1] != self.channels:
      raise ValueError(f"the PixelCNN is built for [B, H, W, {self.channels}] images, got shape "
                       f"{x.shape}")
    if self.kernel_size < 1 or self.kernel_size % 2 == 0:
      raise ValueError(f"kernel_size must be odd and >= 1, got {self.kernel_size}")
    cond = None
    if self.num_classes > 0:
      if not conditions or "label" not in conditions:
        raise ValueError(f"this PixelCNN is class-conditional (num_classes={self.num_classes}): "
                         "pass conditions={'label': int32 [B]}")
      rows = self.num_classes + int(self.null_class)
      cond = nn.Embed(rows, self.cond_dim, name="label_embed")(conditions["label"])
    f, k = self.features, self.kernel_size
    kh = k // 2 + 1
    x = x.astype(self.dtype)
    v = down_shift(down_shifted_conv(f, (kh, k), name="in_v", dtype=self.dtype)(x))
    h = right_shift(down_right_shifted_conv(f, (1, kh), name="in_h", dtype=self.dtype)(x))
    for i in range(self.num_layers):
      v, h = GatedLayer(f, k, self.dropout, self.dtype, name=f"layer_{i}")(v, h, cond,
                                                                           train=train)
    out = nn.Dense(f, dtype=self.dtype, name="head_hidden")(nn.elu(h))
    out = nn.Dense(mixture_num_params(self.channels, self.num_mixtures), dtype=self.dtype,
                   name="head_out")(nn.elu(out))
    return out.astype(jnp.float32)
