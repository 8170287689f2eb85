"""Image-to-image networks: the pix2pix U-Net and PatchGAN, the CycleGAN ResNet generator.

One interface: `G(x, *, train) -> images [B, H, W, C_out]` in [-1, 1] (tanh) and
`D(x, *, train) -> patch logits [B, h, w]`. Conditional discriminators (pix2pix) receive the
channel concatenation of the source and the (real or translated) target as `x`.

Normalization is a field, one of `NORMS`:

* 'batch': running statistics in the `batch_stats` collection (momentum 0.9, PyTorch's 0.1),
  batch statistics when `train=True`, running averages otherwise;
* 'instance': each example and channel normalized over H, W (Ulyanov et al. 2016), no learned
  scale or bias and no running statistics (PyTorch's `InstanceNorm2d(affine=False)`, the
  CycleGAN / pix2pix reference); at batch size 1 training-mode batch norm is instance norm
  with a learned affine map;
* 'none'.

References: pix2pix (Isola et al. 2017, "Image-to-Image Translation with Conditional
Adversarial Networks", appendix 6.1.1 and the reference `UnetGenerator`/`NLayerDiscriminator`),
CycleGAN (Zhu et al. 2017, appendix 7.2, after Johnson et al. 2016).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any

__all__ = ["DROPOUT_PLACEMENTS", "NORMS", "PADDINGS", "PatchDiscriminator", "ResnetGenerator",
           "UNetGenerator", "patch_receptive_field", "unet_dropout_levels", "unet_num_downs"]

NORMS = ("batch", "instance", "none")
UPSAMPLES = ("resize", "transpose")
PADDINGS = ("reflect", "zero")
DROPOUT_PLACEMENTS = ("bottleneck", "reference")


def _check_norm(norm: str) -> None:
  if norm not in NORMS:
    raise ValueError(f"unknown normalization {norm!r}; choose one of {NORMS}")


class _Norm(nn.Module):
  """'batch' | 'instance' | 'none' (see the module docstring); computed in float32."""

  kind: str
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    _check_norm(self.kind)
    if self.kind == "none":
      return x
    h = x.astype(jnp.float32)
    if self.kind == "batch":
      h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       dtype=jnp.float32)(h)
    else:
      h = nn.InstanceNorm(epsilon=1e-5, use_scale=False, use_bias=False, dtype=jnp.float32)(h)
    return h.astype(self.dtype)


def _conv(features: int, kernel: int, stride: int, padding, *, use_bias: bool, dtype: Dtype,
          name: str | None = None) -> nn.Conv:
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                 use_bias=use_bias, dtype=dtype, name=name)


def _reflect(x: Array, pad: int) -> Array:
  """Reflection padding of H and W (PyTorch's `ReflectionPad2d`: the edge is not repeated)."""
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


# ---------------------------------------------------------------------- U-Net (pix2pix)


def unet_num_downs(height: int, width: int, num_downs: int | None = None) -> int:
  """The U-Net's number of stride-2 downsamplings for an H x W input.

  Default (`num_downs=None`): the largest n with 2^n dividing both H and W, i.e. log2(size)
  for a square power-of-two image, so the bottleneck is 1 x 1 (8 at 256 x 256: the paper's).

  Raises:
    ValueError: `num_downs` < 1, or 2^num_downs does not divide H and W.
  """
  if num_downs is None:
    g = math.gcd(height, width)
    num_downs = (g & -g).bit_length() - 1
    if num_downs < 1:
      raise ValueError(f"a U-Net needs an even image size, got {height}x{width}")
    return num_downs
  if num_downs < 1:
    raise ValueError(f"num_downs must be >= 1, got {num_downs}")
  if height % 2 ** num_downs or width % 2 ** num_downs:
    raise ValueError(f"U-Net num_downs={num_downs} needs 2**{num_downs} = {2 ** num_downs} "
                     f"to divide the image size, got {height}x{width}; choose a smaller "
                     "num_downs (None: the largest that fits) or resize the images")
  return num_downs


def unet_dropout_levels(num_downs: int, placement: str = "bottleneck",
                        layers: int = 3) -> tuple[int, ...]:
  """The decoder levels i (layer d_i, 1 <= i <= n-1) of an n-level U-Net that have dropout.

  'bottleneck': the `layers` levels nearest the bottleneck, n-1 down to n-layers (the paper's
  CD512 x 3: 7, 6, 5 for n = 8). 'reference': 4 <= i <= n-2, the reference code's n-5 middle
  blocks of ngf*8 features (6, 5, 4 for n = 8; none for n < 6).

  Raises:
    ValueError: an unknown placement.
  """
  if placement not in DROPOUT_PLACEMENTS:
    raise ValueError(f"unknown dropout placement {placement!r}; choose one of "
                     f"{DROPOUT_PLACEMENTS}")
  if placement == "reference":
    return tuple(range(num_downs - 2, 3, -1))
  return tuple(i for i in range(num_downs - 1, 0, -1) if num_downs - 1 - i < layers)


class UNetGenerator(nn.Module):
  """The pix2pix U-Net: an encoder-decoder whose decoder layer i also reads encoder layer i.

  With n = `num_downs` and f_i = ngf * min(2^i, 8) features at depth i = 0..n-1:

    encoder: e_0 = Conv(f_0)(x); e_i = Norm(Conv(f_i)(LReLU_0.2(e_{i-1})))  (no norm on
      e_0 nor on the 1 x 1 bottleneck e_{n-1});
    decoder: d_{n-1} = Norm(Deconv(f_{n-2})(ReLU(e_{n-1})));
      d_i = Norm(Deconv(f_{i-1})(ReLU([d_{i+1}, e_i])))  for i = n-2..1;
      y = tanh(Deconv(C_out)(ReLU([d_1, e_0]))),

  every conv 4x4 with stride 2 and padding 1 (Deconv: transposed, doubling H and W), and
  [a, b] the channel concatenation (the skip connection). Dropout(p = `dropout`) follows the
  norm of the decoder layers `unet_dropout_levels` names: with `dropout_placement`
  'bottleneck' the `dropout_layers` nearest the bottleneck (the paper's CD512-CD512-CD512),
  with 'reference' those of the reference code (`UnetSkipConnectionBlock`'s `use_dropout`
  blocks: d_i for 4 <= i <= n-2, the ngf*8 levels between the bottleneck's own layer and the
  four outer levels; none for n < 6). The dropout is the generator's only noise, so it
  is on at train *and* at test time (`train` only switches batch statistics): pass an rng
  stream 'dropout' to `apply`; the same key gives the same output.

  Biases: a conv followed by batch norm has none (the norm's shift replaces it). The two down
  convs no norm follows (e_0 and the bottleneck e_{n-1}) keep theirs with `edge_bias` (the
  default); the reference code gives every down conv of a batch-norm U-Net no bias
  (`edge_bias=False`). With instance norm or none every conv has a bias either way.

  Attributes:
    out_channels: output channels C_out.
    ngf: features of the outermost level (64 in the paper).
    num_downs: downsamplings; None: `unet_num_downs` (bottleneck 1 x 1).
    norm: 'batch' (the paper), 'instance' or 'none'.
    dropout: the decoder's dropout rate (0: deterministic).
    dropout_layers: how many decoder layers next to the bottleneck have dropout
      ('bottleneck' placement only).
    dtype: compute dtype (norms in float32, output float32).
    dropout_placement: 'bottleneck' (the paper's) or 'reference' (the reference code's).
    edge_bias: biases on e_0's and the bottleneck's convs under batch norm (False: the
      reference code's).
  """

  out_channels: int
  ngf: int = 64
  num_downs: int | None = None
  norm: str = "batch"
  dropout: float = 0.5
  dropout_layers: int = 3
  dtype: Dtype = jnp.float32
  dropout_placement: str = "bottleneck"
  edge_bias: bool = True

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    """[B, H, W, C_in] -> [B, H, W, out_channels] in [-1, 1]."""
    if x.ndim != 4:
      raise ValueError(f"UNetGenerator takes images [B, H, W, C], got shape {x.shape}")
    _check_norm(self.norm)
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
    n = unet_num_downs(x.shape[1], x.shape[2], self.num_downs)
    feats = [self.ngf * min(2 ** i, 8) for i in range(n)]
    drop = unet_dropout_levels(n, self.dropout_placement, self.dropout_layers)
    drop = drop if self.dropout > 0 else ()
    bias = self.norm != "batch"
    edge_bias = bias or self.edge_bias
    pad = ((1, 1), (1, 1))
    tpad = ((2, 2), (2, 2))  # lax.conv_transpose's padding equal to PyTorch's padding=1, k=4

    h = x.astype(self.dtype)
    skips = []
    for i, f in enumerate(feats):
      if i:
        h = nn.leaky_relu(h, 0.2)
      h = _conv(f, 4, 2, pad, use_bias=edge_bias if i in (0, n - 1) else bias,
                dtype=self.dtype, name=f"down_{i}")(h)
      if 0 < i < n - 1:
        h = _Norm(self.norm, self.dtype, name=f"down_norm_{i}")(h, train=train)
      skips.append(h)

    h = skips[-1]
    for i in reversed(range(1, n)):
      if i < n - 1:
        h = jnp.concatenate([h, skips[i]], axis=-1)
      h = nn.ConvTranspose(feats[i - 1], (4, 4), strides=(2, 2), padding=tpad,
                           use_bias=bias, dtype=self.dtype, name=f"up_{i}")(nn.relu(h))
      h = _Norm(self.norm, self.dtype, name=f"up_norm_{i}")(h, train=train)
      if i in drop:
        h = nn.Dropout(self.dropout, deterministic=False, name=f"up_dropout_{i}")(h)
    if n > 1:
      h = jnp.concatenate([h, skips[0]], axis=-1)
    h = nn.ConvTranspose(self.out_channels, (4, 4), strides=(2, 2), padding=tpad,
                         dtype=self.dtype, name="up_0")(nn.relu(h))
    return jnp.tanh(h.astype(jnp.float32))


# ---------------------------------------------------------------------- PatchGAN


def patch_receptive_field(n_layers: int) -> int:
  """The input extent (pixels) one logit of `PatchDiscriminator(n_layers)` sees.

  Backwards from one logit, the two stride-1 4x4 convs give r = 1 + 3 + 3 = 7, and each of the
  n stride-2 4x4 convs r <- 2 r + 2, so r(n) = 9 * 2^n - 2: 16, 34, 70 for n = 1, 2, 3 (the
  paper's 70 x 70 PatchGAN). Neighbouring logits are 2^n pixels apart.

  Raises:
    ValueError: n_layers < 1.
  """
  if n_layers < 1:
    raise ValueError(f"a PatchDiscriminator needs n_layers >= 1, got {n_layers}")
  return 9 * 2 ** n_layers - 2


def _patch_logits_size(size: int, n_layers: int) -> int:
  """Logits along one axis of `size` pixels: n halvings (4x4, stride 2, pad 1), then - 2."""
  for _ in range(n_layers):
    size = (size + 2 - 4) // 2 + 1
  return size - 2


class PatchDiscriminator(nn.Module):
  """PatchGAN: a fully convolutional critic scoring every overlapping patch as real or fake.

    h = LReLU_0.2(Conv_s2(ndf)(x));  h = LReLU_0.2(Norm(Conv_s2(ndf min(2^k, 8))(h)))
    for k = 1..n-1;  h = LReLU_0.2(Norm(Conv_s1(ndf min(2^n, 8))(h)));  logits = Conv_s1(1)(h)

  with 4x4 convs, padding 1 (zero), no norm on the first layer. A logit sees a
  `patch_receptive_field(n_layers)` square of `x` (70 x 70 for n = 3); at 256 x 256 the
  logits are 30 x 30. For H = 16, n = 2: 2 x 2 logits of 34 x 34 fields (clipped by padding).

  Attributes:
    ndf: features of the first layer (64 in the paper).
    n_layers: stride-2 layers (3: the 70 x 70 PatchGAN).
    norm: 'batch' (pix2pix), 'instance' (CycleGAN) or 'none'.
    dtype: compute dtype (logits float32).
  """

  ndf: int = 64
  n_layers: int = 3
  norm: str = "batch"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    """[B, H, W, C] -> logits [B, h, w]."""
    if x.ndim != 4:
      raise ValueError(f"PatchDiscriminator takes images [B, H, W, C], got shape {x.shape}")
    _check_norm(self.norm)
    patch_receptive_field(self.n_layers)  # validates n_layers
    if min(_patch_logits_size(s, self.n_layers) for s in x.shape[1:3]) < 1:
      raise ValueError(f"PatchDiscriminator(n_layers={self.n_layers}) leaves no logits on "
                       f"{x.shape[1]}x{x.shape[2]} images (it needs at least "
                       f"{3 * 2 ** self.n_layers} pixels a side); use fewer layers")
    bias = self.norm != "batch"
    pad = ((1, 1), (1, 1))
    h = x.astype(self.dtype)
    h = nn.leaky_relu(_conv(self.ndf, 4, 2, pad, use_bias=True, dtype=self.dtype)(h), 0.2)
    for k in range(1, self.n_layers + 1):
      stride = 2 if k < self.n_layers else 1
      h = _conv(self.ndf * min(2 ** k, 8), 4, stride, pad, use_bias=bias, dtype=self.dtype)(h)
      h = nn.leaky_relu(_Norm(self.norm, self.dtype)(h, train=train), 0.2)
    h = _conv(1, 4, 1, pad, use_bias=True, dtype=self.dtype, name="logits")(h)
    return h[..., 0].astype(jnp.float32)


# ---------------------------------------------------------------------- ResNet (CycleGAN)


class _ResnetBlock(nn.Module):
  """x + Norm(Conv3(ReLU(Norm(Conv3(x))))), each conv after a reflection pad of 1."""

  norm: str
  dtype: Dtype

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    f = x.shape[-1]
    bias = self.norm != "batch"
    h = _conv(f, 3, 1, "VALID", use_bias=bias, dtype=self.dtype)(_reflect(x, 1))
    h = nn.relu(_Norm(self.norm, self.dtype)(h, train=train))
    h = _conv(f, 3, 1, "VALID", use_bias=bias, dtype=self.dtype)(_reflect(h, 1))
    return x + _Norm(self.norm, self.dtype)(h, train=train)


class ResnetGenerator(nn.Module):
  """The CycleGAN generator (Johnson et al. 2016): c7s1-ngf, d2ngf, d4ngf, R4ngf x n_blocks,
  u2ngf, ungf, c7s1-C_out with tanh.

    h = ReLU(Norm(Conv7(ngf)(reflect_3(x))))
    h = ReLU(Norm(Conv3_s2(2 ngf)(reflect_1(h)))); h = ReLU(Norm(Conv3_s2(4 ngf)(reflect_1(h))))
    h = ResBlock(h) n_blocks times   (x + Norm(Conv3(ReLU(Norm(Conv3(x))))), reflect pads)
    h = ReLU(Norm(Up(2 ngf)(h))); h = ReLU(Norm(Up(ngf)(h)))
    y = tanh(Conv7(C_out)(reflect_3(h)))

  Every convolution pads by reflection by default, so no layer sees a zero border: a constant
  image maps to a constant image. The reference code zero-pads its two stride-2 convs
  (`down_padding='zero'`: Conv3_s2 with padding 1 instead of reflect_1 then a VALID conv).

  Upsampling `Up` ('resize', the default): nearest-neighbour x2, then a reflection-padded 3x3
  conv. The reference uses 3x3 stride-2 transposed convs ('transpose', output padding 1: the
  paper's fractionally strided convs); their uneven kernel overlap paints checkerboard
  patterns (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts") and a constant
  input does not stay constant, so resize-conv is the default.

  Attributes:
    out_channels: output channels C_out.
    ngf: features of the first layer (64).
    n_blocks: residual blocks (6 for 128 x 128, 9 for 256 x 256 in the paper).
    norm: 'instance' (the paper), 'batch' or 'none'.
    dtype: compute dtype (output float32).
    upsample: 'resize' or 'transpose' (see above).
    down_padding: 'reflect' (the default) or 'zero' (the reference's) for the stride-2 convs.
  """

  out_channels: int
  ngf: int = 64
  n_blocks: int = 6
  norm: str = "instance"
  dtype: Dtype = jnp.float32
  upsample: str = "resize"
  down_padding: str = "reflect"

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    """[B, H, W, C_in] -> [B, H, W, out_channels] in [-1, 1]; H, W multiples of 4."""
    if x.ndim != 4:
      raise ValueError(f"ResnetGenerator takes images [B, H, W, C], got shape {x.shape}")
    _check_norm(self.norm)
    if self.upsample not in UPSAMPLES:
      raise ValueError(f"unknown upsampling {self.upsample!r}; choose one of {UPSAMPLES}")
    if self.down_padding not in PADDINGS:
      raise ValueError(f"unknown down_padding {self.down_padding!r}; choose one of {PADDINGS}")
    if x.shape[1] % 4 or x.shape[2] % 4 or min(x.shape[1:3]) < 8:
      raise ValueError("ResnetGenerator downsamples twice by 2 and reflection-pads by 3: it "
                       f"needs H and W multiples of 4 and >= 8, got {x.shape[1]}x{x.shape[2]}")
    if self.n_blocks < 0:
      raise ValueError(f"n_blocks must be >= 0, got {self.n_blocks}")
    bias = self.norm != "batch"
    h = _conv(self.ngf, 7, 1, "VALID", use_bias=bias, dtype=self.dtype)(
        _reflect(x.astype(self.dtype), 3))
    h = nn.relu(_Norm(self.norm, self.dtype)(h, train=train))
    for mult in (2, 4):
      if self.down_padding == "zero":
        h = _conv(self.ngf * mult, 3, 2, ((1, 1), (1, 1)), use_bias=bias, dtype=self.dtype)(h)
      else:
        h = _conv(self.ngf * mult, 3, 2, "VALID", use_bias=bias, dtype=self.dtype)(
            _reflect(h, 1))
      h = nn.relu(_Norm(self.norm, self.dtype)(h, train=train))
    for _ in range(self.n_blocks):
      h = _ResnetBlock(self.norm, self.dtype)(h, train=train)
    for mult in (2, 1):
      if self.upsample == "resize":
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
        h = _conv(self.ngf * mult, 3, 1, "VALID", use_bias=bias, dtype=self.dtype)(
            _reflect(h, 1))
      else:  # PyTorch ConvTranspose2d(k=3, s=2, padding=1, output_padding=1)
        h = nn.ConvTranspose(self.ngf * mult, (3, 3), strides=(2, 2),
                             padding=((1, 2), (1, 2)), use_bias=bias, dtype=self.dtype)(h)
      h = nn.relu(_Norm(self.norm, self.dtype)(h, train=train))
    h = _conv(self.out_channels, 7, 1, "VALID", use_bias=True, dtype=self.dtype)(_reflect(h, 3))
    return jnp.tanh(h.astype(jnp.float32))
