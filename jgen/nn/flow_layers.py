"""Invertible layers of RealNVP (Dinh et al. 2017) and Glow (Kingma & Dhariwal 2018).

Every layer is a Flax linen module on NHWC arrays with one compact `__call__(x, *, reverse)`
returning `(y, logdet)`, where `logdet` is `log |det dy/dx|` per example (shape `[B]`,
float32); in reverse it maps back and returns the log-det of the inverse map (the negative of
the forward one). `forward(x) -> (z, logdet)` and `inverse(z) -> x` name the two directions:

    layer = ActNorm()
    variables = layer.init(rng, x, method="forward")       # data-dependent init on x
    z, logdet = layer.apply(variables, x, method="forward")
    x_back = layer.apply(variables, z, method="inverse")

Parameters are float32 and the scales are parameterized so the log-dets stay finite:
`log_sigmoid` (Glow coupling), `c * tanh` (RealNVP coupling), log-scales (ActNorm, priors),
an LU factorization with `log|s|` (1x1 convolution). The LU permutation and the signs of `s`
are fixed at init and live in the `constants` collection, which no optimizer updates.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ActNorm", "AdditiveCoupling", "AffineCoupling", "CouplingNet", "InvConv1x1",
           "LearnedPrior", "Split", "Squeeze", "ZeroConv", "checkerboard_mask",
           "squeeze", "unsqueeze"]

CONSTANTS = "constants"


def _spatial_size(x: jax.Array) -> int:
  return math.prod(x.shape[1:-1])


def _per_example(x: jax.Array) -> jax.Array:
  """Sum over every axis but the batch axis."""
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


class _Invertible(nn.Module):
  """`forward` and `inverse` over the subclass's `__call__(x, *, reverse)`."""

  def forward(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(z, logdet)`: the layer applied to `x` and `log |det dz/dx|` per example."""
    return self(x, reverse=False)

  def inverse(self, z: jax.Array) -> jax.Array:
    """The `x` with `forward(x)[0] == z`."""
    return self(z, reverse=True)[0]


class ActNorm(_Invertible):
  """Per-channel affine `y = (x + bias) * exp(logs)` (Glow, section 3.1).

  Data-dependent initialization: at `init` the bias and log-scale are set from the batch the
  layer sees so that its output has zero mean and unit variance per channel.

  Attributes:
    eps: added to the batch standard deviation at init.
  """

  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array, *, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
    axes = tuple(range(x.ndim - 1))
    c = x.shape[-1]
    data = x.astype(jnp.float32)
    bias = self.param("bias", lambda _, shape: -jnp.mean(data, axis=axes), (c,))
    logs = self.param("logs",
                      lambda _, shape: -jnp.log(jnp.std(data, axis=axes) + self.eps), (c,))
    logdet = jnp.full((x.shape[0],), _spatial_size(x) * jnp.sum(logs))
    if reverse:
      return x * jnp.exp(-logs) - bias, -logdet
    return (x + bias) * jnp.exp(logs), logdet


def _random_rotation(rng: jax.Array, c: int) -> jax.Array:
  q, r = jnp.linalg.qr(jax.random.normal(rng, (c, c), jnp.float32))
  return q * jnp.sign(jnp.diag(r))[None, :]


class InvConv1x1(_Invertible):
  """Invertible 1x1 convolution `y = x W^T` over channels (Glow, section 3.2).

  `W` starts as a random rotation (log-det 0). With `lu=True` it is kept as
  `W = P L (U + diag(sign_s * exp(log_s)))` with a fixed permutation `P` and fixed signs,
  unit lower-triangular `L` and strictly upper-triangular `U`, so `log|det W| = sum(log_s)`
  costs O(C); with `lu=False` `W` is a free matrix and the log-det comes from `slogdet`.

  Attributes:
    lu: use the LU parameterization.
  """

  lu: bool = True

  def weight(self, c: int) -> tuple[jax.Array, jax.Array]:
    """`(W, log|det W|)` for `c` channels."""
    if not self.lu:
      w = self.param("kernel", lambda rng, shape: _random_rotation(rng, shape[0]), (c, c))
      return w, jnp.linalg.slogdet(w)[1]
    # One rotation gives all five initial values; Flax also calls the init functions at apply
    # time to check shapes, where zeros of the right shape stand in.
    init = {"perm": jnp.zeros((c, c)), "sign_s": jnp.zeros((c,)), "lower": jnp.zeros((c, c)),
            "upper": jnp.zeros((c, c)), "log_s": jnp.zeros((c,))}
    if self.is_initializing():
      p, l, u = jax.scipy.linalg.lu(_random_rotation(self.make_rng("params"), c))
      s = jnp.diag(u)
      init = {"perm": p, "sign_s": jnp.sign(s), "lower": l, "upper": jnp.triu(u, 1),
              "log_s": jnp.log(jnp.abs(s))}
    perm = self.variable(CONSTANTS, "perm", lambda: init["perm"]).value
    sign_s = self.variable(CONSTANTS, "sign_s", lambda: init["sign_s"]).value
    lower = self.param("lower", lambda *_: init["lower"])
    upper = self.param("upper", lambda *_: init["upper"])
    log_s = self.param("log_s", lambda *_: init["log_s"])
    lower = jnp.tril(lower, -1) + jnp.eye(c, dtype=lower.dtype)
    upper = jnp.triu(upper, 1) + jnp.diag(sign_s * jnp.exp(log_s))
    return perm @ lower @ upper, jnp.sum(log_s)

  @nn.compact
  def __call__(self, x: jax.Array, *, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
    w, logdet_w = self.weight(x.shape[-1])
    logdet = jnp.full((x.shape[0],), _spatial_size(x) * logdet_w)
    if reverse:
      return jnp.einsum("...i,ji->...j", x, jnp.linalg.inv(w)), -logdet
    return jnp.einsum("...i,ji->...j", x, w), logdet


class ZeroConv(nn.Module):
  """Convolution initialized to output zeros, scaled by `exp(3 * logs)` (Glow's Conv2dZeros).

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
  """

  features: int
  kernel_size: int = 3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    y = nn.Conv(self.features, (k, k), padding="SAME", kernel_init=nn.initializers.zeros,
                bias_init=nn.initializers.zeros)(x)
    logs = self.param("logs", nn.initializers.zeros, (self.features,))
    return y * jnp.exp(3.0 * logs)


class CouplingNet(nn.Module):
  """The coupling layers' shift/scale network; its last layer starts at zero.

  `num_blocks == 0`: Glow's network, conv3x3 -> ActNorm -> ReLU -> conv1x1 -> ActNorm -> ReLU
  -> ZeroConv3x3. `num_blocks > 0`: RealNVP's residual network, conv3x3 then `num_blocks`
  pre-activation residual blocks (ActNorm, ReLU, conv3x3, twice) then ActNorm -> ReLU ->
  ZeroConv3x3. ActNorm stands in for RealNVP's batch normalization (no running statistics).

  Attributes:
    hidden: hidden channels.
    out_channels: output channels.
    num_blocks: residual blocks (0: the Glow network).
  """

  hidden: int
  out_channels: int
  num_blocks: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    def norm_relu(h):
      return nn.relu(ActNorm()(h)[0])

    h = nn.Conv(self.hidden, (3, 3), padding="SAME", use_bias=self.num_blocks > 0)(x)
    if self.num_blocks == 0:
      h = norm_relu(h)
      h = norm_relu(nn.Conv(self.hidden, (1, 1), use_bias=False)(h))
    else:
      for _ in range(self.num_blocks):
        r = nn.Conv(self.hidden, (3, 3), padding="SAME")(norm_relu(h))
        h = h + nn.Conv(self.hidden, (3, 3), padding="SAME")(norm_relu(r))
      h = norm_relu(h)
    return ZeroConv(self.out_channels)(h)


def checkerboard_mask(height: int, width: int, parity: int) -> jax.Array:
  """`[H, W, 1]` float mask, 1 where `(i + j) % 2 == parity`."""
  i, j = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
  return ((i + j) % 2 == parity).astype(jnp.float32)[..., None]


class _Coupling(_Invertible):
  """Shared masking of the coupling layers.

  `mask='channel'`: the first (parity 0) or second (parity 1) half of the channels is kept and
  conditions the other half. `mask='checkerboard'`: the pixels with `(i + j) % 2 == parity` are
  kept and condition the others, all channels at once.
  """

  mask: str = "channel"
  parity: int = 0
  hidden: int = 512
  num_blocks: int = 0

  def _check(self, x: jax.Array) -> None:
    if self.mask not in ("channel", "checkerboard"):
      raise ValueError(f"unknown coupling mask {self.mask!r}; use 'channel' or 'checkerboard'")
    if self.mask == "channel" and x.shape[-1] < 2:
      raise ValueError(f"a channel-mask coupling needs at least 2 channels, got {x.shape}; "
                       "use mask='checkerboard' or squeeze first")

  def _halves(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(conditioning part, transformed part) for a channel mask."""
    c = x.shape[-1] // 2
    a, b = x[..., :c], x[..., c:]
    return (a, b) if self.parity == 0 else (b, a)

  def _join(self, a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.concatenate([a, b] if self.parity == 0 else [b, a], axis=-1)

  def _net_outputs(self, cond: jax.Array, channels: int, per_channel: int) -> jax.Array:
    net = CouplingNet(self.hidden, channels * per_channel, self.num_blocks, name="net")
    return net(cond)

  def _apply(self, x: jax.Array, reverse: bool, per_channel: int, transform
             ) -> tuple[jax.Array, jax.Array]:
    """Runs the network on the kept part and `transform(part, h, reverse) -> (y, logdet
    elements)` on the other part."""
    self._check(x)
    if self.mask == "channel":
      a, b = self._halves(x)
      h = self._net_outputs(a, b.shape[-1], per_channel)
      y, ld = transform(b, h, reverse)
      return self._join(a, y), _per_example(ld)
    m = checkerboard_mask(x.shape[1], x.shape[2], self.parity)
    h = self._net_outputs(x * m, x.shape[-1], per_channel)
    y, ld = transform(x, h, reverse)
    return m * x + (1.0 - m) * y, _per_example((1.0 - m) * ld)


class AffineCoupling(_Coupling):
  """Affine coupling `y_b = x_b * s(x_a) + t(x_a)`, `y_a = x_a`.

  `scale='sigmoid'` (Glow): `y_b = (x_b + t) * sigmoid(r + 2)`, log-det `log_sigmoid(r + 2)`.
  `scale='tanh'` (RealNVP): `y_b = x_b * exp(c * tanh(r)) + t` with a learned per-channel `c`
  (starting at 1). The network's last layer starts at zero.

  Attributes:
    mask, parity, hidden, num_blocks: see `_Coupling` and `CouplingNet`.
    scale: 'sigmoid' or 'tanh'.
  """

  scale: str = "sigmoid"

  @nn.compact
  def __call__(self, x: jax.Array, *, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
    if self.scale not in ("sigmoid", "tanh"):
      raise ValueError(f"unknown coupling scale {self.scale!r}; use 'sigmoid' or 'tanh'")

    def transform(v, h, rev):
      shift, raw = h[..., 0::2], h[..., 1::2]
      if self.scale == "sigmoid":
        log_s = jax.nn.log_sigmoid(raw + 2.0)
        if rev:
          return v * jnp.exp(-log_s) - shift, log_s
        return (v + shift) * jnp.exp(log_s), log_s
      factor = self.param("scale_factor", nn.initializers.ones, (v.shape[-1],))
      log_s = factor * jnp.tanh(raw)
      if rev:
        return (v - shift) * jnp.exp(-log_s), log_s
      return v * jnp.exp(log_s) + shift, log_s

    y, logdet = self._apply(x, reverse, 2, transform)
    return y, -logdet if reverse else logdet


class AdditiveCoupling(_Coupling):
  """Additive (NICE/Glow) coupling `y_b = x_b + t(x_a)`, `y_a = x_a`; log-det 0.

  Attributes:
    mask, parity, hidden, num_blocks: see `_Coupling` and `CouplingNet`.
  """

  @nn.compact
  def __call__(self, x: jax.Array, *, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
    def transform(v, h, rev):
      return (v - h if rev else v + h), jnp.zeros_like(v)

    return self._apply(x, reverse, 1, transform)


def squeeze(x: jax.Array) -> jax.Array:
  """Space to depth: `[B, H, W, C] -> [B, H/2, W/2, 4C]` (each 2x2 patch into channels)."""
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f"squeeze needs even height and width, got {x.shape}")
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze(x: jax.Array) -> jax.Array:
  """The inverse of `squeeze`: `[B, H, W, 4C] -> [B, 2H, 2W, C]`."""
  b, h, w, c4 = x.shape
  if c4 % 4:
    raise ValueError(f"unsqueeze needs a multiple of 4 channels, got {x.shape}")
  c = c4 // 4
  x = x.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, c)


class Squeeze(_Invertible):
  """`squeeze` as a layer (a permutation: log-det 0)."""

  @nn.compact
  def __call__(self, x: jax.Array, *, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
    zero = jnp.zeros((x.shape[0],), jnp.float32)
    return (unsqueeze(x) if reverse else squeeze(x)), zero


class Split(_Invertible):
  """Multi-scale split: the second half of the channels is factored out.

  With `learned=True` (Glow) the factored-out half `z2` has the prior
  `N(mean(z1), exp(logs(z1))^2)` from a zero-initialized convolution of the kept half `z1`;
  the layer maps `z2` to the standard-normal variable `eps = (z2 - mean) / exp(logs)`, so that
  `log p(z2 | z1) = log N(eps; 0, 1) + logdet`. The output is `concat(z1, eps)`, of the input's
  shape; the model carries on with `z1`. With `learned=False` (RealNVP) it is the identity and
  `z2` has the standard-normal prior.

  Attributes:
    learned: learn the conditional Gaussian prior.
  """

  learned: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, *, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
    if not self.learned:
      return x, jnp.zeros((x.shape[0],), jnp.float32)
    c = x.shape[-1] // 2
    z1, z2 = x[..., :c], x[..., c:]
    h = ZeroConv(2 * z2.shape[-1])(z1)
    mean, logs = h[..., 0::2], h[..., 1::2]
    logdet = -_per_example(logs)
    if reverse:
      return jnp.concatenate([z1, z2 * jnp.exp(logs) + mean], axis=-1), -logdet
    return jnp.concatenate([z1, (z2 - mean) * jnp.exp(-logs)], axis=-1), logdet


class LearnedPrior(_Invertible):
  """The top latent's learned Gaussian prior `N(mean, exp(logs)^2)` (Glow's `learntop`).

  Per-position mean and log-scale, zero at init; maps `z` to `eps = (z - mean) / exp(logs)`.
  """

  @nn.compact
  def __call__(self, x: jax.Array, *, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
    mean = self.param("mean", nn.initializers.zeros, x.shape[1:])
    logs = self.param("logs", nn.initializers.zeros, x.shape[1:])
    logdet = jnp.full((x.shape[0],), -jnp.sum(logs))
    if reverse:
      return x * jnp.exp(logs) + mean, -logdet
    return (x - mean) * jnp.exp(-logs), logdet
